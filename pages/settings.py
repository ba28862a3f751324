"""Settings: the API key, how to be told a batch is done, the models and prices, and the limits in force."""

from __future__ import annotations

import time

import streamlit as st
import tenacity

from storyteller_core.deliverables import mail, webhook
from storyteller_core.errors import GeminiError, Kind
from storyteller_core.settings import MODELS, PRICES_CHECKED
from storyteller_ui import notify
from storyteller_ui.api.common import ApiError
from storyteller_ui.api.tokens import tokens_for
from storyteller_ui.app_engine import get_engine, key_source, masked
from storyteller_ui.view import plain, then_nothing

KEY_FROM = {  # key_source() -> where the key came from, in words
    "secrets.toml": "from the file .streamlit/secrets.toml",
    "environment": "from the environment (GEMINI_API_KEY or GOOGLE_API_KEY)",
}

engine = get_engine()
st.title(":material/settings: Settings")

st.subheader("Gemini API key")
if engine.settings.api_key:
    source = key_source(engine)
    where = KEY_FROM.get(source, "typed in on this page (forgotten when the app stops)")
    st.write(f"In use: **{masked(engine.settings.api_key)}**, {where}.")
else:
    st.write("In use: **not set: demo mode** (stories come from a local emulator, not Gemini).")
for kind, text in st.session_state.pop("key-outcome", []):  # said once, after the rerun that shows the new state
    getattr(st, kind)(text)
with st.form("key-form", clear_on_submit=True):
    typed = st.text_input("Set a key for as long as this app runs (not saved anywhere)", type="password")
    if st.form_submit_button("Use this key") and typed.strip():
        engine.set_api_key(typed.strip())
        said: list[tuple[str, str]] = []
        try:
            models = engine.available_models()
            if engine.settings.model not in models:
                said.append(("warning", f"The key works, but the model {plain(engine.settings.model)} is not offered to it. Pick another."))
            said.append(("success", "Gemini accepted the key. New videos use it; retry failed ones on the Batch page."))
        except GeminiError as exc:
            if exc.kind is Kind.AUTH:
                said.append(("error", "Gemini rejected this key. Copy it again from Google AI Studio and paste it here."))
            else:
                said.append(("warning", f"Could not check the key right now: {exc.plain_words}. It will be used for new videos."))
        st.session_state["key-outcome"] = said
        st.rerun()  # the key line above and the demo banner show the new key at once
if engine.settings.api_key and st.button("Forget the key (back to demo mode)"):
    engine.set_api_key(None)
    st.rerun()
st.caption("To keep a key across restarts, set GEMINI_API_KEY in the environment or in .streamlit/secrets.toml (git ignores that file).")

st.subheader("When a batch finishes")
st.caption(
    "The Batch page shows a message and the browser tab's title says Done. You can also be told on this computer, or in a chat channel."
)
notify.desktop(offer=True, key="desktop-notify-settings", explain=True)
data_dir = engine.settings.data_dir
hook = webhook.load_url(data_dir)
st.write(f"Webhook: **{plain(webhook.masked_url(hook))}**")
with st.form("webhook-form", clear_on_submit=True):
    typed_url = st.text_input(
        "Webhook URL (Slack, Teams, or anything that takes a JSON POST)",
        type="password",
        placeholder="https://hooks.slack.com/services/...",
    )
    if st.form_submit_button("Save webhook") and typed_url.strip():
        try:
            webhook.save_url(data_dir, typed_url)
        except ValueError as exc:
            st.error(plain(str(exc)))
        else:
            st.rerun()
if hook:
    test_col, forget_col = st.columns([1, 1])
    if test_col.button("Send a test message", icon=":material/send:"):
        report = webhook.BatchReport("test", "Test from Settings", 3, 2, 1, 0, notify.app_link("test"))
        with st.spinner("Sending..."):
            webhook.send_report(data_dir, hook, report, attempts=3, wait=tenacity.wait_fixed(1), timeout=10)
    if forget_col.button("Remove the webhook", icon=":material/delete:"):
        webhook.save_url(data_dir, None)
        st.rerun()
last = webhook.last_outcome(data_dir)
if last:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.at))
    line = f"Last message, {when} ({plain(last.batch or '')}): {plain(last.message)}"
    if last.ok:
        st.success(line, icon=":material/check:")
    else:
        st.error(line, icon=":material/error:")
st.caption(
    "The message carries the batch's name, its counts and a link back to this app; never the API key. The "
    "URL is kept in the data folder, readable by you alone."
)

st.markdown("**E-mail when a batch is done**")
mail_target = mail.target(data_dir)
if mail_target:
    origin = " (from STORYTELLER_SMTP_URL and STORYTELLER_NOTIFY_EMAIL)" if mail.from_environment() else ""
    st.write(f"E-mail: **{plain(mail_target.masked())}**{origin}" + (", stories included" if mail_target.include_stories else ""))
else:
    st.write("E-mail: **not set up**")
if not mail.from_environment():
    with st.form("email-form", clear_on_submit=True):
        smtp_url = st.text_input(
            "SMTP server",
            type="password",
            placeholder="smtps://me:password@smtp.example.com:465",
            help="smtp:// (STARTTLS when offered) or smtps://, with the user and password your mail provider gives for apps",
        )
        recipient = st.text_input("Send to", placeholder="analyst@example.com")
        with_stories = st.checkbox("Include the stories in the e-mail", value=False)
        if st.form_submit_button("Save e-mail") and smtp_url.strip():
            try:
                mail.save(data_dir, smtp_url, recipient, with_stories)
            except ValueError as exc:
                st.error(plain(str(exc)), icon=":material/error:")
            else:
                st.rerun()
if mail_target:
    test_col, forget_col = st.columns([1, 1])
    if test_col.button("Send a test e-mail", icon=":material/forward_to_inbox:"):
        with st.spinner("Sending..."):
            outcome = mail.send_test(data_dir)
        (st.success if outcome.ok else st.error)(plain(outcome.message))
    if not mail.from_environment() and forget_col.button("Remove the e-mail settings", icon=":material/delete:"):
        mail.save(data_dir, None, None)
        st.rerun()
mailed = mail.last_outcome(data_dir)
if mailed:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(mailed.at))
    line = f"Last e-mail, {when} ({plain(mailed.batch or '')}): {plain(mailed.message)}"
    (st.success if mailed.ok else st.error)(line, icon=":material/check:" if mailed.ok else ":material/error:")
st.caption(
    "One e-mail per finished batch, with its counts, cost, failures and a link; never the API key. Nothing is "
    "sent in demo mode except the test. The SMTP address is kept in the data folder, readable by you alone; "
    "set STORYTELLER_SMTP_URL and STORYTELLER_NOTIFY_EMAIL to give it for the app and the CLI alike."
)

st.subheader("API tokens (for other programs)")
st.caption(
    "Programs use the job API (/api/v1: tus uploads, batches, jobs, live events; see docs/API.md) with "
    "`Authorization: Bearer <token>`. A token is shown once, when made; the data folder keeps only its hash."
)
api_tokens = tokens_for(data_dir)
made = st.session_state.pop("api-token-made", None)
if made:
    st.success("Copy this token now; it is not shown again:", icon=":material/key:")
    st.code(made, language=None)
with st.form("api-token-form", clear_on_submit=True):
    token_name = st.text_input("Which program will hold it", placeholder="ingest script on the NAS")
    if st.form_submit_button("Make an API token") and token_name.strip():
        try:
            st.session_state["api-token-made"] = api_tokens.create(token_name)["token"]
        except ApiError as exc:
            st.error(plain(exc.message), icon=":material/error:")
        else:
            st.rerun()
for record in api_tokens.list():
    token_line = st.container(horizontal=True, vertical_alignment="center")
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["last_used_at"])) if record["last_used_at"] else "never"
    token_line.markdown(
        f"**{plain(record['name'])}** · made {time.strftime('%Y-%m-%d', time.localtime(record['created_at']))} · last used {used}"
    )
    token_line.button(
        "Revoke", key=f"revoke-{record['id']}", icon=":material/block:", on_click=then_nothing, args=(api_tokens.revoke, record["id"])
    )

st.subheader("Models and prices (USD per million tokens)")
retired = engine.catalog.warning(engine.settings.model) if engine.settings.model_pinned else None
if retired:
    st.warning(plain(retired))
st.dataframe(
    [
        {"model": m.name, "label": m.label, "input": m.usd_per_m_input, "cached input": m.usd_per_m_cached, "output": m.usd_per_m_output}
        for m in MODELS.values()
    ],
    hide_index=True,
    width="stretch",
)
st.caption(
    f"Prices checked {PRICES_CHECKED} (storyteller_core/gemini/prices.json, from ai.google.dev/gemini-api/docs/pricing); "
    "Flex and Batch half price. A model not listed is priced from its family and labelled an estimate. "
    f"Gemini API version: {engine.settings.api_version} (STORYTELLER_API_VERSION)."
)
st.selectbox(
    "Video processing for new questions (Gemini 3 models)",
    ["default", "agentic"],
    key="settings-processing",
    index=1 if st.session_state.get("default-processing") == "agentic" else 0,
    on_change=lambda: st.session_state.update({"default-processing": st.session_state["settings-processing"]}),
    help="agentic (preview) uses far fewer tokens on long videos; the Batch page's options start from this",
)

st.subheader("Limits")
s = engine.settings
st.dataframe(
    [  # one text column: mixed types in a column break the table
        {"setting": "videos at once", "value": str(s.max_workers), "change with": "STORYTELLER_MAX_WORKERS"},
        {"setting": "uploads at once", "value": str(s.max_uploads), "change with": "STORYTELLER_MAX_UPLOADS"},
        {"setting": "status checks per second", "value": f"{s.polls_per_second:g}", "change with": "config.py"},
        {"setting": "largest file", "value": f"{s.max_file_bytes / 1024**3:g} GB", "change with": "config.py"},
        {"setting": "data folder", "value": str(s.data_dir), "change with": "STORYTELLER_DATA_DIR"},
    ],
    hide_index=True,
    width="stretch",
)
