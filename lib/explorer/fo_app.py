# %% [markdown]
# # The FiftyOne App for audio: launch, stop, listen
#
# The App is launched only in an interactive notebook (Jupyter, VS Code, Colab), never under
# papermill or `audiolens run` (a batch run would hang or leave a server behind).
# `fo_execution_context` tells them apart: papermill/nbclient kernels are children of a process
# that is not a notebook server. The App is launched in this process; on a server you reach
# over SSH, launch it from a Python script instead (`fo_launch_app(..., remote=True)` prints the
# port to forward): a notebook kernel's App session ends with the kernel. `fo_stop_app` stops
# the App's service process *and* its web-server child (killing only the first can leave the
# second running).
#
# **Hearing a clip.** The App's video player starts muted and its only unmute control is the
# hidden `m` key, and FiftyOne has no setting to change that. So the notebook installs a small
# FiftyOne panel plugin, **Audio** (`fo_install_audio_plugin`): open a clip (or select one in
# the grid) and the panel shows its label, file and duration and a visible audio player with
# its own volume control, playing the clip file itself (any format the browser decodes).

# %%
import os
import sys
from pathlib import Path

from lib.core.atomic_io import atomic_write_text

FO_AUDIO_PLUGIN_NAME = "@audiolens/audio"
FO_AUDIO_PLUGIN_FOLDER = "audiolens-audio"
FO_AUDIO_PLUGIN_YML = """\
name: "@audiolens/audio"
description: "audiolens: play the current clip's audio in the App with a visible player and volume"
version: "1.0.0"
fiftyone:
  version: ">=1.0"
panels:
  - audiolens_audio
"""
FO_AUDIO_PLUGIN_PY = '''"""audiolens Audio panel: the open (or selected) clip's audio, a visible player and volume.

Written by audiolens (lib/explorer/fo_app.py, fo_install_audio_plugin); FiftyOne loads it from its plugins folder.
"""

from urllib.parse import quote

import fiftyone.operators as foo
import fiftyone.operators.types as types


class AudiolensAudioPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="audiolens_audio",
            label="Audio",
            surfaces="grid modal",
            help_markdown="Plays the clip's audio file (field audio_filepath) with a volume control.",
        )

    def on_load(self, ctx):
        self._show(ctx)

    def on_change_current_sample(self, ctx):
        self._show(ctx)

    def on_change_selected(self, ctx):
        self._show(ctx)

    def _show(self, ctx):
        sample_id = ctx.current_sample or (list(ctx.selected)[0] if ctx.selected else None)
        clip = None
        if sample_id:
            sample = ctx.dataset[sample_id]
            path = sample["audio_filepath"] if sample.has_field("audio_filepath") else None
            if path:
                truth = sample["ground_truth"] if sample.has_field("ground_truth") else None
                label = truth.label if truth is not None else ""
                duration = sample["duration"] if sample.has_field("duration") else None
                # the extension at the end lets the player pick an <audio> element for any format
                url = "/media?filepath=" + quote(path, safe="") + "&as=.wav"
                clip = {"url": url, "name": path.rsplit("/", 1)[-1], "label": str(label), "duration": duration}
        ctx.panel.state.clip = clip
        ctx.panel.data.player = {"url": clip["url"]} if clip else None

    def render(self, ctx):
        panel = types.Object()
        clip = ctx.panel.state.clip
        if not clip:
            panel.md("Open a clip (click a thumbnail), or select one, to hear it here.", name="hint")
        else:
            seconds = f" \u00b7 {clip['duration']:.2f} s" if clip.get("duration") else ""
            panel.md(f"**{clip['label']}** \u00b7 `{clip['name']}`{seconds}", name="title")
            panel.obj(
                "player",
                view=types.MediaPlayerView(controls=True, volume=0.8, muted=False, playing=False, width="100%",
                                           height="54px"),
            )
        return types.Property(panel, view=types.GridView(orientation="vertical", padding=2))


def register(p):
    p.register(AudiolensAudioPanel)
'''


def fo_install_audio_plugin(plugins_dir=None) -> Path:
    """Write the Audio panel plugin into ``plugins_dir`` and point FiftyOne at that folder; return the plugin folder.

    ``plugins_dir``: FiftyOne's plugins folder (``None``: ``$FIFTYONE_PLUGINS_DIR``, else
    ``~/fiftyone/__plugins__``). Call it before ``fo_launch_app``; an App already running loads
    it after a page reload. Files that already hold this text are left alone.
    """
    import fiftyone as fo

    root = Path(
        plugins_dir
        or os.environ.get("FIFTYONE_PLUGINS_DIR")
        or fo.config.plugins_dir
        or Path.home() / "fiftyone" / "__plugins__"
    ).expanduser()
    folder = root / FO_AUDIO_PLUGIN_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("fiftyone.yml", FO_AUDIO_PLUGIN_YML), ("__init__.py", FO_AUDIO_PLUGIN_PY)):
        target = folder / name
        if not target.exists() or target.read_text() != text:
            atomic_write_text(target, text)
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(root)
    fo.config.plugins_dir = str(root)
    return folder


def fo_audio_spaces(samples_share: float = 0.6):
    """The App layout the notebook opens: the sample grid beside the Audio panel."""
    import fiftyone as fo

    return fo.Space(
        children=[fo.Panel(type="Samples", pinned=True), fo.Panel(type="audiolens_audio")],
        orientation="horizontal",
        sizes=[samples_share, 1 - samples_share],
    )


# %% [markdown]
# ## Interactive notebook or batch run
#
# `fo_execution_context` looks at the IPython shell, the environment and the command lines of the
# kernel's parent processes; a kernel started by a driver it does not know counts as batch.


# %%
def _fo_parent_cmdlines(levels: int = 3) -> list:
    lines, pid = [], os.getppid()
    for _ in range(levels):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                lines.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return lines


def fo_execution_context() -> str:
    """``"papermill"`` (batch: papermill, nbclient, nbconvert, pytest, audiolens run), ``"notebook"``
    (an interactive notebook front end), or ``"script"`` (plain Python)."""
    if os.environ.get("AUDIOLENS_BATCH") or os.environ.get("PAPERMILL_EXECUTION"):
        return "papermill"
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return "script"
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "notebook"
    parent_lines = _fo_parent_cmdlines()
    parents = " ".join(parent_lines)
    batch_markers = ("papermill", "nbconvert", "nbclient", "pytest", "audiolens run", "bin/audiolens")
    if any(marker in parents for marker in batch_markers):
        return "papermill"
    if parent_lines and "ipykernel" in parent_lines[0]:  # started from another kernel (papermill in a notebook)
        return "papermill"
    if (
        os.environ.get("JPY_SESSION_NAME")
        or os.environ.get("VSCODE_PID")
        or os.environ.get("VSCODE_CWD")
        or any(m in parents for m in ("jupyter", "vscode", "code-server", "spyder", "nteract"))
    ):
        return "notebook"
    return "papermill"  # a kernel started by an unknown driver: treat it as batch, never block it


# %% [markdown]
# ## Launching and stopping the App
#
# The App starts only where someone can look at it, and stopping it ends the service process and
# every child it started.


# %%
def fo_launch_app(
    dataset_or_view,
    port: int = 5151,
    remote: bool = False,
    address: str | None = None,
    when: str = "auto",
    spaces=None,
):
    """Launch the App (``when``: ``"auto"`` = only interactively, ``"always"``, ``"never"``).

    Returns the session, or ``None`` when not launched (and says why). ``remote=True`` is for
    Python scripts on a server (it prints the SSH port-forwarding command); the notebook does
    not offer it, since the App would stop with the kernel.
    """
    import fiftyone as fo

    context = fo_execution_context()
    if when == "never" or (when == "auto" and context != "notebook"):
        print(
            f"FiftyOne App not launched ({'disabled' if when == 'never' else context + ' run'}). "
            f"Interactively: fo.launch_app(fo.load_dataset({dataset_or_view._dataset.name!r}))"
        )
        return None
    session = fo.launch_app(
        dataset_or_view,
        port=port,
        remote=remote,
        address=address,
        auto=context == "notebook" and not remote,
        spaces=spaces,
    )
    if remote:
        print(
            f"The App is served at {session.url}. From your computer: ssh -N -L {port}:localhost:{port} <server>, "
            f"then open http://localhost:{port}"
        )
    return session


def fo_stop_app(session=None, port: int | None = None, timeout: float = 10.0) -> list:
    """Close ``session`` and stop the App server on ``port``: the service process and its children."""
    import psutil
    from fiftyone.core.session import session as fos

    port = port or (session.server_port if session is not None else None)
    service = fos._server_services.pop(port, None) if port is not None else None
    procs = []
    if service is not None and getattr(service, "child", None) is not None:
        try:
            procs = [psutil.Process(service.child.pid)] + psutil.Process(service.child.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
    if session is not None:
        try:
            session.plots.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass
        if fos._session is session:
            fos._session = None
    if service is not None:
        try:
            service.stop()
        except Exception:  # noqa: BLE001 - we terminate below anyway
            pass
    stopped = []
    for proc in procs:
        try:
            if proc.is_running():
                proc.terminate()
            stopped.append(proc.pid)
        except psutil.NoSuchProcess:
            stopped.append(proc.pid)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        proc.kill()
    return stopped


# %% [markdown]
# ## Listening in the notebook
#
# Audio players under the cell for the first clips of any view: a query result or the App's selection.


# %%
def fo_play_clips(view, max_clips: int = 5, field: str = "audio_filepath"):
    """Notebook audio players for the first ``max_clips`` clips of a view (e.g. a query result).

    With an App session: ``fo_play_clips(fo_clips_view(ds).select(session.selected))`` plays
    the clips selected in the App.
    """
    from IPython.display import HTML, Audio, display

    paths = view.limit(max_clips).values(field)
    labels = view.limit(max_clips).values("ground_truth.label")
    for path, label in zip(paths, labels):
        display(HTML(f"<b>{label}</b> <code>{Path(path).name}</code>"))
        display(Audio(filename=path))
    return paths
