"""Graphs, not just stacks, in a real browser: drag in a residual Add, pick its inputs, train it."""

from playwright.sync_api import expect

from tests.browser.conftest import (
    add_to_multiselect,
    no_exceptions,
    open_page,
    settle,
    shot,
    train_and_wait,
)


def test_residual_skip_built_with_the_inputs_picker(server, page):
    page.goto(server.url)
    settle(page)
    open_page(page, "Build")
    nodes = page.locator(".ll-node")
    nodes.nth(4).wait_for()
    assert nodes.count() == 5  # dense_1 relu_1 dense_2 relu_2 output
    page.locator('.ll-op[data-op="add"]').drag_to(nodes.nth(4), target_position={"x": 30, "y": 4})
    settle(page)
    page.locator(".ll-node").nth(5).wait_for()
    add = page.locator(".ll-node", has_text="Add")
    expect(add).to_contain_text(
        "dense_2, relu_2"
    )  # a new merge node starts wired to the two layers above it

    # Make it a real skip connection: relu_1 (before dense_2) + relu_2.
    page.locator('[data-testid="stMultiSelect"] [aria-label="Remove dense_2"]').click()
    expect(page.locator(".ll-node", has_text="Add")).not_to_contain_text("dense_2")
    settle(page)
    add_to_multiselect(page, "Inputs", "relu_1")
    expect(page.locator(".ll-node", has_text="Add")).to_contain_text("relu_2, relu_1")
    settle(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    no_exceptions(page)
    shot(page, "graph-residual-build")
    page.get_by_role("heading", name="Summary").scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    shot(page, "graph-residual-diagram")

    open_page(page, "Train")
    train_and_wait(page, 5, timeout=60)
    no_exceptions(page)
