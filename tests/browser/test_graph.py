"""Graphs without the canvas, as a keyboard user builds them: add a residual Add with the form, pick its inputs in
the outline's form, and see the skip on the canvas."""

from playwright.sync_api import expect

from tests.browser.conftest import (
    add_to_multiselect,
    no_exceptions,
    open_page,
    settle,
    shot,
)


def test_residual_skip_built_with_the_forms_alone(server, page):
    page.goto(server.url)
    settle(page)
    open_page(page, "Build")
    nodes = page.locator(".ll-node")
    nodes.nth(4).wait_for()
    assert nodes.count() == 5  # dense_1 relu_1 dense_2 relu_2 output
    box = page.get_by_role("combobox", name="Add a layer")
    box.click()
    box.press_sequentially("Add (res")  # the list is long: type to find it, as a keyboard user does
    page.get_by_role("option", name="Add (residual)").click()
    settle(page)
    page.get_by_role("button", name="Add", exact=True).click()
    page.locator(".ll-node").nth(5).wait_for()
    add = page.locator(".ll-node", has_text="Add")
    expect(add).to_contain_text(
        "dense_2, relu_2"
    )  # a new merge node starts wired to the two layers before it

    # Make it a real skip connection: relu_1 (before dense_2) + relu_2.
    page.locator('[data-testid="stMultiSelect"] [aria-label="Remove dense_2"]').click()
    expect(page.locator(".ll-node", has_text="Add")).not_to_contain_text("dense_2")
    settle(page)
    add_to_multiselect(page, "Inputs", "relu_1")
    expect(page.locator(".ll-node", has_text="Add")).to_contain_text("relu_2, relu_1")
    page.locator('.lc-edges g[data-edge="relu_1>add_1"]').wait_for(
        state="attached"
    )  # on the canvas too
    settle(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    no_exceptions(page)
    shot(page, "graph-residual-build")
