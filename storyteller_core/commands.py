"""The command API the pages and the CLI call: submit, analyze again, retry, cancel, remove, the checked list.

Commands only touch the store and the runner's queue; the runner's workers
make every step. A question already answered is reused, one in flight is
joined: an analysis is keyed by what makes its answer (see analysis.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from storyteller_core.gemini.estimates import Estimate, question_estimate, questions_estimate
from storyteller_core.intake.background_intake import BackgroundIntake
from storyteller_core.intake.candidates import Candidate, inspect_path
from storyteller_core.intake.media import thumbnail
from storyteller_core.intake.spool import discard, release_spool
from storyteller_core.records.analysis import PRIORITY_RANK, Analysis, AnalysisState, Ask, analysis_key
from storyteller_core.records.batch import Batch, Item, default_batch_name, new_batch_id, new_id
from storyteller_core.records.options import VideoOptions
from storyteller_core.records.video import Video, VideoState
from storyteller_core.settings import Settings
from storyteller_core.storage.disk_store import NotFound, Store
from storyteller_core.work.runner import Runner

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, store: Store, runner: Runner, settings: Callable[[], Settings]) -> None:
        self.store = store
        self.runner = runner
        self._settings = settings
        self.intake = BackgroundIntake(store, runner.leases, self._finish_row)
        self._finishing = threading.Lock()  # a row is removed before or after the intake finishes it, not during

    @property
    def settings(self) -> Settings:
        return self._settings()

    # -- asking -----------------------------------------------------------------------------
    def submit(self, candidates: Iterable[Candidate], ask: Ask, *, batch_name: str | None = None, resume: bool = False) -> list[Item]:
        """One row per (source, analysis); refused files become rows with their reason.

        With ``resume`` (the CLI run again on the same files), a row that exists
        in any batch for the same source and question is returned instead of a new one.
        """
        candidates = list(candidates)
        first = next((c.display_name for c in candidates), None)
        batch = Batch(id=new_batch_id(), name=(batch_name or "").strip() or default_batch_name(first))
        rows: dict[tuple[str, str], Item] = {}
        items = []
        for candidate in candidates:
            if not candidate.ok:
                items.append(
                    self._add_item(
                        batch,
                        Item(
                            id=new_id(),
                            batch_id=batch.id,
                            display_name=candidate.display_name,
                            source_path=candidate.source,
                            error_code=candidate.error_code,
                            error_message=candidate.error_message,
                        ),
                    )
                )
                continue
            video = self.store.add_video(self._video_of(candidate))
            analysis = self._ask(video, ask)
            key = (candidate.source, analysis.id)
            if key not in rows:
                rows[key] = self._row_for(batch, candidate.display_name, key[0], video, analysis, resume)
            items.append(rows[key])
        return items

    def submit_paths(self, paths: Iterable[Path], ask: Ask, **kwargs: Any) -> list[Item]:
        return self.submit([inspect_path(Path(p), self.settings) for p in paths], ask, **kwargs)

    def analyze_again(self, item_ids: Iterable[str], ask: Ask, *, batch_name: str | None = None, beside: bool = False) -> list[Item]:
        """Ask another question of the videos behind these rows: their Gemini files are reused while ACTIVE.

        The answers make a new batch, or with ``beside`` (a row's Ask again) join the batch of the first row, so
        the new answer is shown with its video.
        """
        sources = [item for item in self.store.many(Item, item_ids) if item.video_id]
        first = sources[0].display_name if sources else None
        own = self.store.get(Batch, sources[0].batch_id) if beside and sources else None
        batch = own or Batch(id=new_batch_id(), name=(batch_name or "").strip() or f"Again: {default_batch_name(first)}")
        rows: dict[tuple[str, str], Item] = {}
        for source in sources:
            video = self.store.require(Video, source.video_id or "")
            analysis = self._ask(video, ask)
            key = (source.source_path, analysis.id)
            if key not in rows:
                rows[key] = self._row_for(batch, source.display_name, key[0], video, analysis, resume=False)
        return list(rows.values())

    def again_estimate(self, item_ids: Iterable[str], ask: Ask) -> Estimate:
        """What ``analyze_again`` of these rows would cost: each video once, through its context cache where one is used."""
        video_ids = dict.fromkeys(item.video_id for item in self.store.many(Item, item_ids) if item.video_id)
        return questions_estimate(self.store, self.settings, self.store.many(Video, video_ids), ask)

    # -- acting on a row --------------------------------------------------------------------
    def retry(self, item_id: str) -> Item:
        """Run a failed or cancelled row again, from the furthest point its video reached."""
        item = self.store.require(Item, item_id)
        analysis_id = item.analysis_id
        if not analysis_id:
            return item  # refused at intake: the person adds the file again
        if item.cancelled:
            item = self.store.update(Item, item_id, cancelled=False)
        analysis = self.store.require(Analysis, analysis_id)
        video = self.store.require(Video, analysis.video_id)
        if analysis.backend != self.settings.backend:  # asked of demo mode or another server: ask the current one
            analysis = self._ask(
                video,
                Ask(
                    analysis.prompt,
                    analysis.model,
                    analysis.preset,
                    analysis.priority,
                    VideoOptions.from_key(analysis.options),
                    analysis.tier,
                ),
            )
            item = self.store.move_item(item_id, analysis.id)
        elif analysis.state in (AnalysisState.FAILED, AnalysisState.CANCELLED):
            analysis = self._reopen(analysis.id)
        elif analysis.cancel_requested:
            analysis = self.store.update(Analysis, analysis.id, cancel_requested=False)
        if self.store.require(Video, video.id).state is VideoState.FAILED:
            self._reopen_video(video.id)
        if not analysis.state.terminal:
            self.runner.enqueue(f"analysis:{analysis.id}")
        return item

    def cancel(self, item_id: str) -> Item:
        """Queued or waiting: cancelled at once. Running: at its next check (within a second or two)."""
        item = self.store.update(Item, item_id, cancelled=True)
        if item.analysis_id:
            self._stop_if_unwanted(item.analysis_id)
        return item

    def remove(self, item_id: str) -> None:
        """Forget a row. An unfinished analysis nobody else asked for is cancelled; a finished one is kept for reuse."""
        with self._finishing:
            item = self.store.delete_item(item_id)
        if item is not None and item.intake is not None:  # removed before its file was checked
            if "://" not in item.source_path:
                discard(self.store, [Path(item.source_path)], self.settings.spool_dir)
            return
        if item is None or not item.analysis_id:
            return
        if not self.store.items_of(item.analysis_id):
            self._stop_if_unwanted(item.analysis_id)
            analysis = self.store.get(Analysis, item.analysis_id)
            in_job = analysis and analysis.cancel_requested and (analysis.batch_job or analysis.batch_token)
            if analysis and analysis.state is not AnalysisState.COMPLETED and not in_job:  # a job's: its worker ends it
                self.store.delete_analysis(analysis.id)
        if item.video_id:
            release_spool(self.store, item.video_id, self.settings.spool_dir)

    # -- the checked list before Start: in the store, so a reload loses nothing ---------------------
    def pending(self) -> list[Candidate]:
        return [Candidate.from_dict(entry) for entry in self.store.pending()]

    def add_pending(self, candidates: Iterable[Candidate]) -> None:
        self.store.add_pending([c.to_dict() for c in candidates])  # checked before the list is locked: hashing takes time

    def remove_pending(self, source: str) -> None:
        """Drop one file (or link) from the checked list, by what the person added."""
        self.store.remove_pending(source)
        if "://" not in source:
            discard(self.store, [Path(source)], self.settings.spool_dir)

    def clear_pending(self) -> None:
        entries = self.store.clear_pending()
        discard(self.store, [Path(e["path"]) for e in entries if not e.get("url")], self.settings.spool_dir)

    def start_pending(self, ask: Ask, *, batch_name: str | None = None) -> Batch | None:
        """The checked list becomes a batch at once; its files are checked and queued in the background.

        Files refused while listed (not a video, too large, a mistyped path) never become rows: they stay on the
        list with their reason until the person dismisses them.
        """
        candidates = [c for c in self.pending() if c.ok]
        if not candidates:
            return None
        batch = Batch(
            id=new_batch_id(), name=(batch_name or "").strip() or default_batch_name(candidates[0].display_name), intake=ask.to_dict()
        )
        items = [
            Item(
                id=new_id(),
                batch_id=batch.id,
                display_name=c.display_name,
                source_path=c.source,
                error_code=c.error_code,
                error_message=c.error_message,
                intake=c.to_dict() if c.ok else None,
            )
            for c in candidates
        ]
        if not self.store.start_batch(batch, items):
            return None  # another tab started these files a moment ago
        self.intake.start(batch.id)
        return batch

    def resume_intake(self) -> None:
        """Finish checking the files of batches a stopped engine had started."""
        self.intake.resume()

    # -- helpers ---------------------------------------------------------------------------------
    def _video_of(self, candidate: Candidate) -> Video:
        if candidate.url:  # Gemini reads a web video itself: its "file" is ready at once and never expires
            return Video(
                id=candidate.sha256,
                sha256=candidate.sha256,
                display_name=candidate.display_name,
                url=candidate.url,
                state=VideoState.FILE_ACTIVE,
                gemini_uri=candidate.url,
                mime_type="",
            )
        video = Video(
            id=candidate.sha256,
            sha256=candidate.sha256,
            display_name=candidate.display_name,
            sources=[str(candidate.path)],
            size_bytes=candidate.size_bytes,
        )
        if candidate.probe:
            p = candidate.probe
            video.duration_s, video.width, video.height, video.fps = p.duration_s, p.width, p.height, p.fps
            video.video_codec, video.audio_codec, video.mime_type = p.video_codec, p.audio_codec, p.mime_type
        if self.store.get(Video, video.id) is None:
            thumb = thumbnail(candidate.path, self.settings.data_dir / "thumbs" / f"{candidate.sha256}.jpg")
            video.thumbnail_path = str(thumb) if thumb else None
        return video

    def _ask(self, video: Video, ask: Ask, *, wanted: bool = True) -> Analysis:
        """The analysis for this question of this video on the current backend: found, reopened or new.

        ``wanted=False`` (a row cancelled before its file was checked) only finds or makes it: nothing another
        batch's row shows is reopened or changed, and the caller cancels a new one; Retry asks for real.
        """
        settings = self.settings
        if video.state is VideoState.FAILED and wanted:  # asked again: give the video another chance too
            self._reopen_video(video.id)
        backend = settings.backend
        options = ask.key_options
        analysis = Analysis(
            id=analysis_key(video.id, ask.model, ask.prompt, options, backend),
            video_id=video.id,
            model=ask.model,
            prompt=ask.prompt,
            preset=ask.preset,
            options=options,
            backend=backend,
            priority=ask.priority,
            tier=ask.tier,
            estimated_cost_usd=None if settings.demo else question_estimate(self.store, settings, video, ask).usd,
        )
        stored, created = self.store.add_analysis(analysis)
        if not wanted:
            return stored
        if not created and stored.state in (AnalysisState.FAILED, AnalysisState.CANCELLED):
            stored = self._reopen(stored.id)  # asked again: try again, at the tier asked now
            if stored.tier != ask.tier:
                stored = self.store.update(
                    Analysis, stored.id, tier=ask.tier, batch_job=None, batch_token=None, estimated_cost_usd=analysis.estimated_cost_usd
                )
        elif not created and stored.cancel_requested and not stored.state.terminal:
            stored = self.store.update(Analysis, stored.id, cancel_requested=False)  # wanted again before it stopped
        if not created and PRIORITY_RANK[ask.priority] < PRIORITY_RANK[stored.priority]:
            stored = self.store.update(Analysis, stored.id, priority=ask.priority)
        return stored

    def _reopen(self, analysis_id: str) -> Analysis:
        return self.store.transition(
            Analysis, analysis_id, AnalysisState.WAITING, error_code=None, error_message=None, failed_step=None, cancel_requested=False
        )

    def _reopen_video(self, video_id: str) -> None:
        self.store.transition(
            Video, video_id, VideoState.CREATED, error_code=None, error_message=None, failed_step=None, upload_count=0, poll_attempts=0
        )

    def _row_for(self, batch: Batch, name: str, source: str, video: Video, analysis: Analysis, resume: bool) -> Item:
        existing = next(
            (i for i in self.store.items_of(analysis.id) if i.source_path == source and (resume or i.batch_id == batch.id)), None
        )
        if existing is not None:
            item = self.store.update(Item, existing.id, cancelled=False) if existing.cancelled else existing
        else:
            item = self._add_item(
                batch,
                Item(
                    id=new_id(),
                    batch_id=batch.id,
                    display_name=name,
                    source_path=source,
                    video_id=video.id,
                    analysis_id=analysis.id,
                    reused=analysis.state is AnalysisState.COMPLETED,
                ),
            )
        if not analysis.state.terminal:
            self.runner.enqueue(f"analysis:{analysis.id}")
        return item

    def _finish_row(self, batch: Batch, item: Item) -> None:
        """Check a started row's file and ask its question (background_intake.py calls this, row by row)."""
        candidate = Candidate.from_dict(item.intake or {})
        if not candidate.checked:
            candidate = inspect_path(candidate.path, self.settings)
        video = self._video_of(candidate) if candidate.ok else None  # hashing and the thumbnail: outside the lock
        with self._finishing:
            current = self.store.get(Item, item.id)  # read now: it may have been removed or cancelled meanwhile
            if current is not None:
                self._ask_for_row(batch, current, candidate, video)

    def _ask_for_row(self, batch: Batch, item: Item, candidate: Candidate, made: Video | None) -> None:
        if not candidate.ok or made is None:
            self.store.update(Item, item.id, error_code=candidate.error_code, error_message=candidate.error_message, intake=None)
            return
        video = self.store.add_video(made)
        analysis = self._ask(video, Ask.from_dict(batch.intake or {}), wanted=not item.cancelled)
        try:
            self.store.move_item(item.id, analysis.id)
            item = self.store.update(Item, item.id, video_id=video.id, intake=None, reused=analysis.state is AnalysisState.COMPLETED)
        except NotFound:  # removed while it was being checked
            self._stop_if_unwanted(analysis.id)
            return
        if item.cancelled:
            self._stop_if_unwanted(analysis.id)
        elif not analysis.state.terminal:
            self.runner.enqueue(f"analysis:{analysis.id}")

    def _add_item(self, batch: Batch, item: Item) -> Item:
        self.store.add_batch(batch)
        return self.store.add_item(item)

    def _stop_if_unwanted(self, analysis_id: str) -> None:
        """Cancel an unfinished analysis once no row wants it any more."""
        analysis = self.store.get(Analysis, analysis_id)
        if analysis is None or analysis.state.terminal:
            return
        if any(not item.cancelled for item in self.store.items_of(analysis_id)):
            return
        task = f"analysis:{analysis_id}"
        if analysis.batch_job or analysis.batch_token:  # in a Gemini batch job: a worker leaves it (and cancels it)
            self.store.update(Analysis, analysis_id, cancel_requested=True)
            if self.runner.dequeue(task):
                self.runner.enqueue(task)  # now, not at its next look at the job
            return
        if not self.runner.running(task) and (self.runner.dequeue(task) or self.runner.leases.claim(task)):
            try:
                self.store.transition(Analysis, analysis_id, AnalysisState.CANCELLED)
            finally:
                self.runner.leases.release(task)
            release_spool(self.store, analysis.video_id, self.settings.spool_dir)
            return
        self.store.update(Analysis, analysis_id, cancel_requested=True)  # running: it stops at its next check
