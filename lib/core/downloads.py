# %% [markdown]
# # Downloads: resumable, checksummed, extracted atomically
#
# What runs when a data set is not found on disk (`lib/core/datasets.py` looked for it first):
# the archive is fetched from the data set's canonical URL into `data/.downloads/`, checked against
# its published checksum and extracted into `data/<folder>`. A run that finds its data never
# runs this code.
#
# A download never deletes anything a user put in `data/`: an incomplete `data/<folder>` is
# renamed `data/<folder>.incomplete-<time>` (printed) before the fresh copy is moved in, the
# archive is kept for a later re-extraction, an interrupted download is continued by the next run
# (from its `.part` file), a refused connection or a bad checksum leaves no file or empty folder,
# and one process at a time downloads into a data folder (a lock), so staging folders a killed
# extraction left behind are removed by the next one.

# %%
import datetime as _dt
import os
import shutil
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from lib.core.atomic_io import FileInUseError, file_digest, file_lock


class DownloadChecksumError(OSError):
    """A downloaded file does not match its published checksum (corrupt, or the upstream file changed)."""


# %% [markdown]
# ## Download and extraction
#
# A download goes to a `.part` file (continued if a run was interrupted) and is checked before it
# takes its name; an extraction goes to a staging folder renamed into place, and an incomplete copy
# already there is set aside, never deleted.
# One process at a time downloads into a data folder (a lock on the folder).


# %%
def download_file(url: str, target: Path, checksum: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` with a progress bar and verify ``checksum`` (``"sha256:..."``).

    The bytes go to ``target.part``; a ``.part`` left by an interrupted run is continued (an HTTP
    range request; a server that ignores it sends the whole file again). ``target`` appears only
    complete and verified; a checksum mismatch removes the partial file (`DownloadChecksumError`).
    Raises ``OSError``; a connection that breaks off keeps the ``.part`` for the next run.
    """
    import http.client
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    done = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # the registry's https/http URLs
    except (urllib.error.URLError, OSError) as error:
        raise OSError(f"cannot download {url}: {getattr(error, 'reason', error)}") from None
    with response:
        resumed = response.status == 206
        announced = int(response.headers.get("Content-Length") or 0)
        total = announced + (done if resumed else 0)
        received = 0
        with (
            open(partial, "ab" if resumed else "wb") as out,
            tqdm(
                total=total or None, initial=done if resumed else 0, unit="B", unit_scale=True, desc=target.name
            ) as bar,
        ):
            broken = False
            try:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
                    received += len(block)
            except http.client.HTTPException:  # a chunked response cut short (IncompleteRead)
                broken = True
    if broken or received < announced:  # the connection dropped: keep the part for the next run, do not verify it
        of = f" of {announced}" if announced else ""
        raise OSError(f"download of {url} broke off after {received}{of} bytes; the next run continues {partial}")
    if checksum:
        algorithm, expected = checksum.split(":", 1)
        actual = file_digest(partial, algorithm)
        if actual != expected:
            partial.unlink(missing_ok=True)
            raise DownloadChecksumError(
                f"{url}: {algorithm} checksum mismatch (expected {expected}, got {actual}). "
                "The download is corrupt or the upstream file changed; retry, or fetch it by hand."
            )
    os.replace(partial, target)
    return target


def extract_dataset_archive(archive: Path, spec, destination: Path) -> Path:
    """Extract into a staging folder beside ``destination``, then rename it into place (``spec``: the
    data set's ``DatasetSpec``, for its ``archive_root`` and the files it keeps outside it).

    An existing ``destination`` (an incomplete copy, possibly holding files a user put there) is
    never deleted: it is renamed ``<name>.incomplete-<time>`` first, and the new name printed.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.extract-", dir=destination.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
        source = staging / spec.archive_root if spec.archive_root else staging
        if not source.is_dir():
            raise OSError(f"{archive}: expected folder {spec.archive_root!r} inside the archive")
        for kept in spec.extra.get("keep_files", ()):  # files outside archive_root that the loader needs
            if (staging / kept).is_file() and not (source / Path(kept).name).exists():
                shutil.copy2(staging / kept, source / Path(kept).name)
        if source == staging:  # the archive's top level is the data set: move it out of the staging folder
            source = staging.with_name(staging.name + "-root")
            os.replace(staging, source)
            staging = source
        if destination.exists() or destination.is_symlink():
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = destination.with_name(f"{destination.name}.incomplete-{stamp}")
            os.replace(destination, aside)
            print(f"{destination} was incomplete; kept it as {aside} (nothing deleted) and extracted a fresh copy")
        os.replace(source, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def clean_download_leftovers(spec, data_dir: Path) -> None:
    """Remove what a killed extraction left (call with the data set's lock held); a partial download is kept:
    ``download_file`` continues it."""
    for leftover in data_dir.glob(f".{spec.folders[0]}.extract-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def dataset_download_lock(data_dir: Path, name: str):
    """One download or extraction at a time in ``data_dir`` (a lock on the folder itself: no lock file)."""
    try:
        with file_lock(data_dir, timeout=0):
            pass
    except FileInUseError:  # only to say why we wait
        print(f"{name}: another process is downloading into {data_dir}; waiting for it")
    with file_lock(data_dir, what=f"{data_dir} (a download)"):
        yield


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when empty
    except OSError:
        pass
