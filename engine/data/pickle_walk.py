"""Read plain data out of a pickle without unpickling it (CIFAR-10's python batches are pickles).

`pickle.loads` runs whatever callables a file names, so an upload is never given to it. Instead the opcodes
are walked with `pickletools.genops` and a small stack machine builds only dicts, lists, tuples, strings,
bytes, numbers and None. Named callables are never imported or called: the few a NumPy array or a Python 2
string is pickled with are recognised by name and rebuilt here from raw bytes with `np.frombuffer`; any
other name (``os system``, ``builtins eval``…) refuses the whole file.
"""

import pickletools

import numpy as np

from engine.errors import DataError

_RECONSTRUCT = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_ALLOWED = (
    _RECONSTRUCT | _FROMBUFFER | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
)

_PUSH_ARG = {
    "BININT",
    "BININT1",
    "BININT2",
    "LONG",
    "LONG1",
    "LONG4",
    "BINFLOAT",
    "FLOAT",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "INT",
}
_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_IGNORED = {"PROTO", "FRAME"}


class _Global:
    def __init__(self, module: str, name: str):
        self.key = (module, name)


class _Pending:
    """An array or dtype whose state arrives with the following BUILD opcode."""

    def __init__(self, kind: str, arg):
        self.kind, self.arg = kind, arg


class _Mark:
    pass


def _refuse(name: str, why: str) -> DataError:
    return DataError(
        f"'{name}' {why}. LayerLab reads pickled data only by inspecting it and never runs code from "
        "a file, so it was not read."
    )


def _as_bytes(value, name: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):  # a Python 2 str read as text
        return value.encode("latin-1")
    raise _refuse(name, "holds an array whose data is not raw bytes")


def _dtype(value, name: str) -> np.dtype:
    if isinstance(value, np.dtype):
        return value
    raise _refuse(name, "describes an array without a plain dtype")


def _call(func: _Global, args: tuple, name: str):
    key = func.key
    if key in _RECONSTRUCT:
        return _Pending("array", None)
    if key == ("numpy", "dtype"):
        code = args[0].decode("latin-1") if isinstance(args[0], bytes) else args[0]
        try:
            dt = np.dtype(code)
        except TypeError:
            raise _refuse(name, f"uses the unknown dtype '{code}'") from None
        if dt.hasobject:
            raise _refuse(name, "holds an array of Python objects")
        return _Pending("dtype", dt)
    if key == ("_codecs", "encode"):
        return str(args[0]).encode("latin-1")
    if key in _FROMBUFFER:
        buf, dt, shape, order = args
        return np.frombuffer(_as_bytes(buf, name), _dtype(dt, name)).reshape(shape, order=order)
    raise _refuse(name, f"calls '{key[0]}.{key[1]}'")


def _build(obj, state, name: str):
    if not isinstance(obj, _Pending):
        raise _refuse(name, "sets the state of an object that is not an array")
    if obj.kind == "dtype":  # (version, byte order, ...)
        order = state[1].decode() if isinstance(state[1], bytes) else state[1]
        return obj.arg.newbyteorder(order) if order in "<>" else obj.arg
    _, shape, dt, fortran, raw = (
        state  # ndarray.__setstate__: (version, shape, dtype, is_fortran, data)
    )
    return np.frombuffer(_as_bytes(raw, name), _dtype(dt, name)).reshape(
        shape, order="F" if fortran else "C"
    )


def read_pickle(data: bytes, name: str):
    """The plain data a pickle describes: dicts, lists, tuples, str, bytes, numbers, None and NumPy arrays."""
    stack: list = []
    memo: dict = {}

    def pop_mark() -> list:
        for i in range(len(stack) - 1, -1, -1):
            if isinstance(stack[i], _Mark):
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise _refuse(name, "is not a well-formed pickle")

    try:
        for op, arg, _pos in pickletools.genops(data):
            code = op.name
            if code in _IGNORED:
                continue
            if code == "STOP":
                if len(stack) != 1:
                    break
                return stack[0]
            if code in _PUSH_ARG:
                stack.append(arg)
            elif code in _CONST:
                stack.append(_CONST[code])
            elif code == "MARK":
                stack.append(_Mark())
            elif code == "POP":
                stack.pop()
            elif code == "POP_MARK":
                pop_mark()
            elif code == "DUP":
                stack.append(stack[-1])
            elif code in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
                stack.append({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_TUPLE": ()}[code])
            elif code == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif code in _TUPLE_N:
                n = _TUPLE_N[code]
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif code == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif code == "LIST":
                stack.append(pop_mark())
            elif code == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif code == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif code == "APPENDS":
                items = pop_mark()
                stack[-1].extend(items)
            elif code == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1][key] = value
            elif code == "SETITEMS":
                items = pop_mark()
                stack[-1].update(zip(items[::2], items[1::2], strict=True))
            elif code in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif code == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif code in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif code in ("GLOBAL", "STACK_GLOBAL"):  # a name is only recorded, never imported
                module, attr = (
                    arg.split(" ", 1) if code == "GLOBAL" else reversed([stack.pop(), stack.pop()])
                )
                if (module, attr) not in _ALLOWED:
                    raise _refuse(name, f"names '{module}.{attr}'")
                stack.append(_Global(module, attr))
            elif code == "REDUCE":
                args, func = stack.pop(), stack.pop()
                if not isinstance(func, _Global):
                    raise _refuse(name, "calls something that is not a known NumPy constructor")
                stack.append(_call(func, args, name))
            elif code == "BUILD":
                state, obj = stack.pop(), stack.pop()
                built = _build(obj, state, name)
                stack.append(built)
                for (
                    k,
                    v,
                ) in (
                    memo.items()
                ):  # the memo held the unbuilt placeholder; later GETs want the result
                    if v is obj:
                        memo[k] = built
            else:
                raise _refuse(
                    name, f"uses the pickle instruction {code}, which plain data does not need"
                )
    except DataError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
        raise DataError(
            f"'{name}' is not a readable pickle of plain data ({str(e)[:80]})."
        ) from None
    raise DataError(
        f"'{name}' is not a readable pickle of plain data (it ends without a single result)."
    )
