"""What a row says on the board when it waits for another process's Gemini, or Gemini cannot be reached (issue 19)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def test_a_row_asked_of_another_gemini_says_which_and_offers_retry_never_failed():
    def script() -> None:
        from storyteller_core.gemini.catalog import Catalog
        from storyteller_core.records.analysis import Analysis, AnalysisState
        from storyteller_core.records.batch import Item
        from storyteller_core.records.video import Video, VideoState
        from storyteller_core.settings import Settings
        from storyteller_core.views.board import row_of
        from storyteller_ui.view import row_view

        class NoCommands:
            def retry(self, item_id): ...
            def cancel(self, item_id): ...
            def remove(self, item_id): ...

        class NoEngine:
            commands = NoCommands()
            settings = Settings(api_key=None)  # demo mode here; the row was asked with a key
            catalog = Catalog(lambda: ["m"], lambda: Settings(api_key=None))

        video = Video(id="v1", sha256="a" * 64, display_name="interview.mp4", state=VideoState.FILE_ACTIVE)
        analysis = Analysis(
            id="a1", video_id="v1", model="m", prompt="p", backend=Settings(api_key="k-abcd").backend, state=AnalysisState.WAITING
        )
        item = Item(id="i1", batch_id="b", display_name="interview.mp4", source_path="/x", video_id="v1", analysis_id="a1")
        row_view(NoEngine(), row_of(item, analysis, video))

    at = AppTest.from_function(script).run()

    assert not at.exception
    captions = "\n".join(c.value for c in at.caption).replace("\\", "")
    assert "Waiting for the app or CLI that has" in captions and "Retry asks the Gemini this app uses" in captions
    labels = [b.label for b in at.button]
    assert "Retry" in labels and not at.error  # left for the other process, never shown as failed
