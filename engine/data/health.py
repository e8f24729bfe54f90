"""A data-health report: class balance (with suggested class weights), duplicates, leakage between splits,
constant and mostly-missing columns, and the output layer and loss the task implies."""

import numpy as np
import pandas as pd

from engine.portable import threaded


def class_weights(y_train: np.ndarray, n_classes: int) -> list[float]:
    """Inverse-frequency weights, n / (k * count), as scikit-learn's 'balanced'; 0 for an absent class."""
    counts = np.bincount(y_train, minlength=n_classes).astype(float)
    return [float(len(y_train) / (n_classes * c)) if c else 0.0 for c in counts]


BLOCK = 8192  # rows folded at a time
MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))  # odd 64-bit constants


def _row_keys(x: np.ndarray) -> np.ndarray:
    """One 64-bit key per row: identical rows give identical keys, different rows practically never do. Each row's
    bytes, read as 64-bit words, are folded into two accumulators (multiply-add and xor-multiply, wrapping), a
    block of rows at a time on all cores, then mixed by pandas' hash."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    raw = flat.view(np.uint8).reshape(len(flat), -1)
    width = -(-raw.shape[1] // 8) * 8  # a row's bytes, zero-padded to whole words
    keys = np.empty((len(raw), 2), np.uint64)

    def fold(i: int) -> None:
        # a block small enough to stay in the cache; then a row of `words` per word of the rows
        block = np.zeros((min(BLOCK, len(raw) - i), width), np.uint8)
        block[:, : raw.shape[1]] = raw[i : i + BLOCK]
        words = np.ascontiguousarray(block.view(np.uint64).T)
        a, b = np.zeros(len(block), np.uint64), np.zeros(len(block), np.uint64)
        for column in words:
            a *= MIX[0]
            a += column
            b ^= column
            b *= MIX[1]
        keys[i : i + BLOCK, 0], keys[i : i + BLOCK, 1] = a, b

    threaded(fold, range(0, len(raw), BLOCK))
    return pd.util.hash_array(keys[:, 0]) * np.uint64(1_000_003) ^ pd.util.hash_array(keys[:, 1])


def _constant_and_missing(col: pd.Series) -> tuple[bool, float]:
    """Whether the column holds at most one distinct value (a gap counting as one), and its missing fraction;
    from min/max or category codes rather than hashing every value."""
    gaps = col.isna().to_numpy()
    missing = float(gaps.mean()) if len(gaps) else 0.0
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        return bool(codes.min() == codes.max()) if len(codes) else True, missing
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=float)
        return bool(gaps.all() or (not gaps.any() and values.min() == values.max())), missing
    if gaps.any():  # a gap and a value are two; gaps alone are one
        return bool(gaps.all()), missing
    if not len(col):
        return True, missing
    # every value equal to the first, stopping at the first that is not (hashing 1M distinct strings took 0.7 s)
    first = col.iloc[0]
    try:
        return all(v == first for v in col), missing
    except (ValueError, TypeError):  # values whose comparison is not a truth value (arrays)
        return col.astype(str).nunique() <= 1, missing


def health_report(
    frame: pd.DataFrame,
    target: str,
    task: str,
    x: dict,
    y: dict,
    classes,
    columns: list[str] | None = None,
) -> dict:
    """The verdict on a prepared table, with `fixes`: what one click can do about a finding (ignore columns, drop
    duplicate rows, weight the classes). `columns`: the feature columns used (ignored ones are not judged)."""
    warnings: list[str] = []
    fixes: list[dict] = []
    report: dict = {"rows": len(frame)}
    features = (
        frame[columns] if columns is not None else frame.drop(columns=[target], errors="ignore")
    )

    if task == "classification":
        counts = np.bincount(y["train"], minlength=len(classes))
        report["class_counts"] = {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
        report["class_weights"] = class_weights(y["train"], len(classes))
        ratio = counts.max() / max(counts.min(), 1)
        report["imbalance_ratio"] = float(ratio)
        if ratio >= 3:
            warnings.append(
                f"Classes are imbalanced: the largest has {ratio:.1f}× the rows of the smallest. Turn on "
                "class weights for training, or collect more rows of the rare classes."
            )
        report["implies"] = f"Output: Dense({len(classes)}) giving logits, with cross-entropy" + (
            " (or Dense(1) with BCE-with-logits)." if len(classes) == 2 else "."
        )
    else:
        report["implies"] = "Output: Dense(1) with mean squared error (or L1 / Huber for outliers)."

    # Duplicates and leakage are judged on the prepared inputs (and the target, for duplicates).
    keys = {s: _row_keys(x[s]) for s in ("train", "val", "test")}
    labelled = np.concatenate(
        [k ^ pd.util.hash_array(np.asarray(y[s], dtype=np.float64)) for s, k in keys.items()]
    )
    duplicates = int(pd.Series(labelled).duplicated().sum())
    report["duplicate_rows"] = duplicates
    if duplicates:
        warnings.append(
            f"{duplicates} row(s) are exact duplicates of another row; they weigh twice in training."
        )
        fixes.append(
            {"kind": "drop_duplicates", "label": f"Drop the {duplicates:,} duplicate row(s)"}
        )

    leaked = {s: int(pd.Index(keys[s]).isin(keys["train"]).sum()) for s in ("val", "test")}
    report["leakage"] = leaked
    if leaked["val"] or leaked["test"]:
        warnings.append(
            f"{leaked['val']} validation and {leaked['test']} test row(s) also appear in the training "
            "split (same inputs): their scores overstate how well the model generalizes. Remove "
            "duplicates first."
        )
        if not duplicates:
            fixes.append({"kind": "drop_duplicates", "label": "Drop duplicate rows"})

    profile = {c: _constant_and_missing(features[c]) for c in features.columns}
    constant = [c for c, (const, _) in profile.items() if const]
    mostly_missing = [c for c, (_, gaps) in profile.items() if gaps > 0.5]
    report["constant_columns"], report["mostly_missing_columns"] = constant, mostly_missing
    if constant:
        warnings.append(
            f"Constant column(s) carry no information: {', '.join(constant)}. Ignore them."
        )
        fixes.append(
            {
                "kind": "ignore",
                "columns": constant,
                "label": f"Ignore {len(constant)} constant column(s)",
            }
        )
    if mostly_missing:
        warnings.append(
            f"Mostly missing (over half empty): {', '.join(mostly_missing)}. Consider ignoring them."
        )
        fixes.append(
            {
                "kind": "ignore",
                "columns": mostly_missing,
                "label": f"Ignore {len(mostly_missing)} mostly-missing column(s)",
            }
        )

    report["warnings"] = warnings
    report["fixes"] = fixes
    report["verdict"] = "Looks healthy." if not warnings else f"{len(warnings)} thing(s) to check."
    return report
