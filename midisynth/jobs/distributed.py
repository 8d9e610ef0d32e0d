"""Scale-out: rendering a batch of MIDI files on a Ray cluster, one model per worker.

    from midisynth.jobs.distributed import render_on_ray
    from midisynth.render.pipeline import RenderOptions

    summary = render_on_ray(["midi_dir/"], "wav_dir/", model="google/music-spectrogram-diffusion",
                            options=RenderOptions(sampler="dpmpp", steps=20, seed=0))
    print(summary)            # one line per failed file, then "118 of 120 rendered, 2 failed"

Jobs are planned as `midisynth render` plans them (a directory's tree is mirrored below `output_dir`). Each worker
(a Ray actor) loads one `Synthesizer` and renders chunks of `batch_size` songs through `midisynth.jobs.run.run_jobs`, so
outputs are written atomically exactly as the CLI writes them, and a song renders to the same audio for the same
seed. Workers take one GPU each when the cluster has GPUs. Inputs, `output_dir` and the model must be reachable
under the same paths on every node (a shared file system; a hub id resolves in each node's Hugging Face cache).
Needs Ray: `pip install 'midisynth[ray]'`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from midisynth.extras import import_extra
from midisynth.jobs.output import OutputSettings
from midisynth.jobs.plan import RenderPlan, plan_render
from midisynth.jobs.run import RenderFailure, run_jobs
from midisynth.render.pipeline import RenderOptions, Synthesizer
from midisynth.score.midi import DEFAULT_LIMITS, SongLimits


@dataclass(frozen=True)
class RenderSummary:
    """What a distributed render did: jobs planned, jobs skipped (output existed), the failed files, and notices
    that are not failures (e.g. a loudness target missed to avoid clipping)."""

    planned: int
    skipped: int
    failures: list[RenderFailure]
    notices: list[str]

    @property
    def rendered(self) -> int:
        return self.planned - self.skipped - len(self.failures)

    def __str__(self) -> str:
        lines = self.notices + [f"{failure.name}: {failure.message}" for failure in self.failures]
        lines.append(
            f"{self.rendered} of {self.planned} rendered"
            + (f", {self.skipped} skipped (output exists)" if self.skipped else "")
            + (f", {len(self.failures)} failed" if self.failures else "")
        )
        return "\n".join(lines)


class RenderWorker:
    """The state of one Ray actor: a Synthesizer loaded once, rendering the chunks of jobs it is handed."""

    def __init__(
        self,
        model: str | Path | None,
        device: str,
        vocoder: str | None,
        options: RenderOptions | None,
        allow_pickle: bool,
        threads: int,
    ):
        import torch

        torch.set_num_threads(threads)
        self.load_error: str | None = None  # kept rather than raised: Ray would bury it in a multi-line report
        try:
            self.synth = Synthesizer.from_pretrained(
                model, device=device, vocoder=vocoder, options=options, allow_pickle=allow_pickle
            )
        except (ValueError, FileNotFoundError, ImportError) as err:  # bad model, vocoder, device or option
            self.load_error = str(err)

    def loading_error(self) -> str | None:
        """Why the model could not be loaded on this worker, or None."""
        return self.load_error

    def render(self, plan: RenderPlan, batch_size: int) -> tuple[list[RenderFailure], list[str]]:
        """Render the plan's jobs as `midisynth render` does; returns (failures, notices)."""
        notices: list[str] = []
        failures = run_jobs(self.synth, plan, progress=False, batch_size=batch_size, notify=notices.append)
        return failures, notices


def render_on_ray(
    inputs: list[str | Path],
    output_dir: str | Path,
    model: str | Path | None = None,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
    cpus_per_worker: int = 1,
    options: RenderOptions | None = None,
    settings: OutputSettings | None = None,
    vocoder: str | None = None,
    batch_size: int = 1,
    extension: str | None = None,
    skip_existing: bool = False,
    allow_pickle: bool = False,
    limits: SongLimits = DEFAULT_LIMITS,
) -> RenderSummary:
    """Render MIDI files and directories into `output_dir` on the Ray cluster (joined, or started locally, by
    `ray.init()` when Ray is not initialised yet).

    model: as `--model` (path, hub id, None for the bundled default); use_gpu: None means "when the cluster has
    GPUs" (one GPU per worker); num_workers: None means one per GPU, or one per `cpus_per_worker` CPUs (each
    worker runs torch on that many threads), never more than there are chunks of `batch_size` songs;
    options: sampling (`RenderOptions`); settings: how audio is written (`OutputSettings`: sample rate, format,
    loudness, stems, overwrite); extension: the outputs' suffix (.wav, .flac, .ogg; None: the
    settings' container's, else .wav); limits: the songs refused
    (`SongLimits`: longer than 4 h or of over a million events by default); skip_existing: leave complete outputs
    alone (an empty, truncated or other-format file is rendered again). Bad MIDI files and
    unwritable outputs are listed in the summary and the rest renders; a model that fails to load raises ValueError.
    """
    ray = import_extra("ray", "ray", "render_on_ray")
    from ray.util import ActorPool

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # an existing directory: every input's output goes below it
    notices: list[str] = []
    plan = plan_render(
        [str(item) for item in inputs],
        str(output_dir),
        settings,
        limits=limits,
        skip_existing=skip_existing,
        notify=notices.append,
        extension=extension,
    )
    todo = plan.jobs
    if not todo:
        return RenderSummary(plan.planned, plan.skipped, [], notices)
    if not ray.is_initialized():
        ray.init()
    resources = ray.cluster_resources()
    if use_gpu is None:
        use_gpu = resources.get("GPU", 0) >= 1
    chunks = [todo[first : first + batch_size] for first in range(0, len(todo), batch_size)]
    fitting = int(resources.get("GPU", 0)) if use_gpu else int(resources.get("CPU", 1)) // cpus_per_worker
    actor = ray.remote(RenderWorker).options(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)
    workers = [
        actor.remote(model, "cuda" if use_gpu else "cpu", vocoder, options, allow_pickle, cpus_per_worker)
        for _ in range(min(len(chunks), num_workers or max(1, fitting)))
    ]
    failures: list[RenderFailure] = []
    try:
        for error in ray.get([worker.loading_error.remote() for worker in workers]):
            if error is not None:
                raise ValueError(f"the render workers cannot load the model: {error}")
        pool = ActorPool(workers)
        for chunk_failures, chunk_notices in pool.map_unordered(
            lambda worker, chunk: worker.render.remote(replace(plan, jobs=chunk), batch_size), chunks
        ):
            failures += chunk_failures
            notices += chunk_notices
    finally:
        for worker in workers:
            ray.kill(worker)
    return RenderSummary(plan.planned, plan.skipped, sorted(failures, key=lambda f: f.name), notices)
