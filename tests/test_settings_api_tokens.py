"""Settings makes an API token for the job API (shown once, kept hashed) and revokes it."""

from __future__ import annotations

from storyteller_ui.api.tokens import tokens_for

from .test_pages import app, data_dir  # noqa: F401 (data_dir is a fixture)


def test_a_token_made_on_settings_opens_the_api_until_it_is_revoked(data_dir):  # noqa: F811
    at = app()
    at.switch_page("pages/settings.py").run()
    next(t for t in at.text_input if t.label == "Which program will hold it").input("ingest script")
    next(b for b in at.button if b.label == "Make an API token").click().run()

    assert not at.exception
    [shown] = [c.value for c in at.code if c.value.startswith("vst_")]
    tokens = tokens_for(data_dir)
    token_id = tokens.check(shown)
    assert token_id and shown not in (data_dir / "api-tokens.json").read_text()  # only its hash is kept

    at.button(key=f"revoke-{token_id}").click().run()
    assert tokens.check(shown) is None
    assert not [c.value for c in at.code if c.value.startswith("vst_")]  # shown once, gone after the next run
