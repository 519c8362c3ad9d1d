"""FiftyOne explorer: the notebook on 200 real FSDD clips, the FiftyOne helpers, and the App.

Every FiftyOne database used here lives in a temporary folder (never ~/.fiftyone).
"""

from __future__ import annotations

import os
import time
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest

from lib.explorer.fiftyone_audio import (
    FoUserContentError,
    fo_build_audio_dataset,
    fo_clips_view,
    fo_compute_maps,
    fo_compute_similarity,
    fo_connect,
    fo_export_table,
    fo_geolocations,
    fo_query_by_sample,
    fo_query_by_vector,
    fo_standard_views,
    fo_user_content,
)
from lib.explorer.fo_app import (
    fo_execution_context,
    fo_launch_app,
    fo_stop_app,
)
from tests.process_helpers import free_port

pytestmark = pytest.mark.xdist_group(name="fiftyone")

# FiftyOne attaches to any FiftyOne database service already running for this user, whatever
# FIFTYONE_DATABASE_DIR says: tests running in parallel may share one MongoDB. Every data set
# name here is therefore unique to the test run.
RUN_ID = uuid.uuid4().hex[:8]


@pytest.mark.notebook
def test_notebook_on_200_fsdd_clips(run_notebook, tmp_path):
    """The defaults: the bundled Whisper tiny.en (clip mode, layer 4) against the MFCC baseline."""
    results = run_notebook(
        "fiftyone_explorer",
        max_clips=200,
        cpu_threads=1,
        map_methods=["tsne", "pca"],
        max_videos=12,
        fiftyone_db_dir=str(tmp_path / "fo-db"),
        cache_dir=str(tmp_path / "cache"),
        media_dir=str(tmp_path / "media"),
        fo_dataset_name=f"smoke-fsdd-{RUN_ID}",
    )
    data = results["dataset"]
    assert data["n_samples"] == 200 and data["n_failed"] == 0 and data["n_labels"] == 10
    assert data["non_null_embeddings"] == 200 and data["n_with_location"] == 200
    assert data["n_playback"] == 12 and data["action"] == "new" and data["group_column"] == "speaker"
    for method in ("tsne", "pca"):
        assert results["maps"][method]["finite"] and results["maps"][method]["n_points"] == 200
    for kind in ("by_sample", "by_vector", "by_label_centroid"):
        assert results["queries"][kind]["n_results"] == 20, kind
    assert results["queries"]["by_sample"]["first_is_query"]
    assert results["queries"]["by_vector"]["first_is_query"], "a clip's own embedding must return it first"
    quality = results["quality"]
    assert quality["k"] == 20 and quality["precision_at_k"] > 1.5 * quality["chance"]
    assert quality["group_column"] == "speaker" and quality["precision_at_k_other_groups"] > 1.5 * quality["chance"]
    assert quality["knn"]["scheme"].startswith("5-fold, grouped") and quality["knn"]["accuracy"] > 0.3
    assert results["queries"]["by_label_centroid"]["same_label_fraction"] > quality["chance"]
    (query,) = results["query_by_file"].values()  # a FLAC at 44.1 kHz of a clip the data set does not hold
    assert query["n_results"] == 20 and query["view"].startswith("query-") and query["truth"] is not None
    # the nearest clips say the query's digit; its speaker's own clips are among the neighbours and counted apart,
    # and the neighbours in other voices still say its digit more often than chance (a tenth)
    assert query["top_labels"][0] == query["truth"] and query["same_label_fraction"] > quality["chance"]
    assert 1 <= query["same_group_neighbours"] < 20 and query["same_label_fraction_other_groups"] > quality["chance"]
    cache = results["cache"]
    assert cache["first_run_cold"] and cache["first_run_computed"] == 200 and cache["second_run_computed"] == 0
    assert cache["stage_seconds"]["decode"] > 0 and cache["stage_seconds"]["media"] > 0
    for stage in ("embeddings", "similarity", "tsne", "pca", "dataset", "previews"):
        assert results["timings"][stage] > 0
    playback = results["playback"]
    assert playback["audio_codec"] == ["aac"] and abs(playback["container_seconds"] - playback["clip_seconds"]) < 0.1
    assert playback["metadata"]["frame_height"] == 128 and playback["metadata"]["total_frame_count"] > 0
    assert results["views"]["all-clips"] == 200 and 0 < results["views"]["geo-box"] < 200
    assert results["geo"]["n_inside"] == results["views"]["geo-box"] and results["geo"]["sources"] == ["synthetic"]
    table = pd.read_parquet(results["export"]["path"])
    assert len(table) == 200 and {"tsne_x", "tsne_y", "pca_x", "embedding", "label", "speaker"} <= set(table.columns)
    assert np.isfinite(table[["tsne_x", "tsne_y", "pca_x", "pca_y", "lon", "lat"]].to_numpy()).all()
    app = results["app"]
    assert app["context"] == "papermill" and not app["launched"] and app["url"] is None, "never launch under papermill"
    assert os.path.exists(os.path.join(app["audio_plugin"], "fiftyone.yml"))
    encoder = results["encoder"]
    assert encoder["weights"] == "pretrained" and encoder["config"]["whisper_mode"] == "clip"
    assert "whisper layer 4" in encoder["description"] and "log-mel" in encoder["transform_description"]
    whisper, mfcc = quality["reports"]["whisper-tiny.en-L4-mean"], quality["reports"]["baseline: mfcc20-d1-seg3"]
    # a real pretrained model: words across voices, clearly better than MFCC statistics (issue 11)
    assert whisper["precision_at_k_other_groups"] > mfcc["precision_at_k_other_groups"] + 0.1
    assert whisper["knn"]["accuracy"] > 0.8 and quality["best_knn"] == "whisper-tiny.en-L4-mean"
    out = results["_out"]
    for figure in ("maps.png", "embedding_quality.png", "query_by_sample.png", "map_interactive.html", "geo_map.html"):
        assert os.path.getsize(os.path.join(out, figure)) > 1000


@pytest.mark.notebook
def test_notebook_on_the_esc50_subset(run_notebook, tmp_path):
    """`audiolens run fiftyone_explorer -p dataset esc50`: ESC-50's layout, src_file groups, its folds."""
    results = run_notebook(
        "fiftyone_explorer",
        dataset="esc50",
        encoder="mfcc",
        max_clips=150,
        map_methods=["pca"],
        make_videos=False,
        fiftyone_db_dir=str(tmp_path / "fo-db"),
        cache_dir=str(tmp_path / "cache"),
        media_dir=str(tmp_path / "media"),
        fo_dataset_name=f"smoke-esc50-{RUN_ID}",
    )
    data = results["dataset"]
    assert data["n_samples"] == 150 and data["label_column"] == "category" and data["group_column"] == "src_file"
    assert data["summary"]["fold_column"] == "fold" and data["n_playback"] == 0 and data["n_labels"] == 50
    assert {"fold", "target", "esc10", "src_file", "take"} <= set(data["summary"]["columns"])
    quality = results["quality"]
    assert (
        quality["precision_at_k"] > 2 * quality["chance"] and quality["knn"]["accuracy"] > 3 * quality["knn"]["chance"]
    )
    assert "grouped" in quality["knn"]["scheme"], "the subset lacks fold 1: grouped CV by src_file instead"


@pytest.mark.notebook
def test_mae_variant_with_an_audiomae_checkpoint_on_esc50(run_notebook, tmp_path):
    """`audiolens run fiftyone_explorer -p dataset esc50 -p encoder audiomae` runs this variant."""
    import torch

    from lib.mae.audiomae import build_audiomae_model
    from lib.mae.mae_checkpoints import save_mae_checkpoint
    from lib.mae.mae_transforms import build_mae_transform

    torch.manual_seed(0)
    tiny = dict(depth=2, embed_dim=64, num_heads=2, decoder_dim=64, decoder_depth=1, decoder_heads=2)
    model = build_audiomae_model("audiomae++", "tiny", input_size=(80, 48), **tiny)
    checkpoint = tmp_path / "mae.pt"
    save_mae_checkpoint(checkpoint, model, transform_config=build_mae_transform("log_mel", frames=48).config)
    results = run_notebook(
        "fiftyone_explorer_mae",
        dataset="esc50",
        encoder="audiomae",
        audiomae_checkpoint=str(checkpoint),
        transform="log_mel",
        max_clips=60,
        map_methods=["pca"],
        make_videos=False,
        baseline="none",
        fiftyone_db_dir=str(tmp_path / "fo-db"),
        cache_dir=str(tmp_path / "cache"),
        media_dir=str(tmp_path / "media"),
        fo_dataset_name=f"smoke-mae-{RUN_ID}",
    )
    encoder = results["encoder"]
    assert encoder["kind"] == "audiomae" and encoder["embedding_dim"] == 64 and encoder["weights"] == "pretrained"
    assert encoder["config"]["checkpoint_hash"] and "AudioMAE++ checkpoint" in encoder["description"]
    assert "frames 48" in encoder["description"], "the notebook says which input transform the checkpoint uses"
    assert 40 <= results["dataset"]["n_samples"] <= 60 and results["dataset"]["label_column"] == "category"
    assert results["quality"]["knn"]["n_folds"] >= 2 and list(results["quality"]["reports"]) == ["audiomae-mae"]


# ---------------------------------------------------------------------- in-process FiftyOne
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, fsdd_manifest):
    """60 real clips (6 per digit) with MFCC embeddings and previews in a temporary FiftyOne DB."""
    root = tmp_path_factory.mktemp("fo")
    fo_connect(root / "db", root / "datasets")
    from lib.explorer.audio_embedders import MfccStatsEmbedder
    from lib.explorer.spectrogram_media import spectrogram_videos
    from tests.explorer_helpers import embed_files, render_previews

    manifest = fsdd_manifest.groupby("label").head(6).reset_index(drop=True)
    embeddings, files, failures = embed_files(manifest.path, MfccStatsEmbedder())
    assert files == list(manifest.path) and not failures
    pngs, ok, _, _ = render_previews(files, root / "png")
    videos, _ = spectrogram_videos(files[:3], pngs[:3], root / "mp4", progress=False)
    lonlat, source = fo_geolocations(manifest, seed=0)
    vectors = (embeddings - embeddings.mean(0)) / (embeddings.std(0) + 1e-8)
    ds = fo_build_audio_dataset(
        f"unit-fsdd-{RUN_ID}",
        manifest,
        vectors,
        pngs,
        video_paths=videos + [None] * 57,
        lonlat=lonlat,
        geo_source=source,
        progress=False,
    )
    fo_compute_similarity(ds, vectors)
    yield ds, manifest, vectors
    ds.delete()


def test_dataset_fields_and_video_metadata(small_dataset):
    import fiftyone as fo

    ds, manifest, vectors = small_dataset
    clips = fo_clips_view(ds)
    assert len(clips) == 60 and ds.media_type == "group"
    sample = clips.first()
    assert isinstance(sample.ground_truth, fo.Classification) and sample.ground_truth.label == str(manifest.label[0])
    assert sample.audio_filepath == manifest.path[0] and sample.speaker == manifest.speaker[0]
    assert len(sample.embedding) == vectors.shape[1] and isinstance(sample.location, fo.GeoLocation)
    assert ds.persistent and ds.info["n_samples"] == 63
    assert ds.group_media_types == {"spectrogram": "image", "playback": "video"}
    playback = ds.select_group_slices("playback")
    assert len(playback) == 3 and all(p.endswith(".mp4") for p in playback.values("filepath"))
    assert playback.first().group.id == clips.first().group.id, "a clip's video belongs to its group"
    meta = playback.first().metadata  # stored: the App never needs ffprobe
    assert isinstance(meta, fo.VideoMetadata) and meta.frame_rate == 10 and meta.total_frame_count >= 1
    with pytest.raises(FileNotFoundError, match="preview"):
        fo_build_audio_dataset(
            f"unit-missing-{RUN_ID}", manifest.head(2), vectors[:2], ["/nope/a.png", "/nope/b.png"], progress=False
        )


def test_rebuilding_never_deletes_user_content(small_dataset):
    import fiftyone as fo

    ds, manifest, vectors = small_dataset
    previews = fo_clips_view(ds).values("filepath")
    name = f"unit-user-{RUN_ID}"
    first = fo_build_audio_dataset(name, manifest.head(5), vectors[:5], previews[:5], progress=False)
    try:
        assert first.info["audiolens"]["action"] == "new" and fo_user_content(first) == {}
        again = fo_build_audio_dataset(name, manifest.head(5), vectors[:5], previews[:5], progress=False)
        assert again.info["audiolens"]["action"] == "reuse" and again._doc.id == first._doc.id, "same content: reused"
        changed = fo_build_audio_dataset(name, manifest.head(4), vectors[:4], previews[:4], progress=False)
        assert changed.info["audiolens"]["action"] == "replace", "nothing of the user's: replaced"
        # the user works on it
        sample = fo_clips_view(changed).first()
        sample.tags.append("keep-me")
        sample["note"] = "interesting"
        sample.save()
        changed.save_view("my-view", fo_clips_view(changed).limit(2))
        user = fo_user_content(changed)
        assert set(user) >= {"sample tags", "saved views", "fields"} and user["saved views"] == ["my-view"]
        with pytest.raises(FoUserContentError, match=r"my-view.*Nothing was changed.*overwrite=True"):
            fo_build_audio_dataset(name, manifest.head(3), vectors[:3], previews[:3], progress=False)
        kept = fo.load_dataset(name)
        assert kept.count_sample_tags() == {"keep-me": 1} and kept.has_saved_view("my-view")
        same = fo_build_audio_dataset(name, manifest.head(4), vectors[:4], previews[:4], progress=False)
        assert same.count_sample_tags() == {"keep-me": 1}, "same content: reused with the user's tags"
        assert same.info["audiolens"]["action"] == "reuse"
        views = fo_standard_views(same, label=str(manifest.label[0]))
        assert (
            "all-clips" in views
            and same.has_saved_view("my-view")
            and "all-clips" not in fo_user_content(same).get("saved views", [])
        )
        replaced = fo_build_audio_dataset(
            name, manifest.head(3), vectors[:3], previews[:3], overwrite=True, progress=False
        )
        assert replaced.info["audiolens"]["action"] == "replace" and replaced.count_sample_tags() == {}
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_similarity_queries_return_the_clip_first(small_dataset):
    ds, manifest, vectors = small_dataset
    ids = fo_clips_view(ds).values("id")
    for row in (0, 17, 42):
        by_id = fo_query_by_sample(ds, ids[row], k=20)
        by_vec = fo_query_by_vector(ds, vectors[row], k=20)
        assert len(by_id) == 20 and len(by_vec) == 20
        assert by_id.first().id == ids[row] and by_vec.first().id == ids[row]
        assert set(by_id.values("id")) == set(by_vec.values("id"))
    with pytest.raises(ValueError, match="dims"):
        fo_query_by_vector(ds, np.zeros(3))


def test_views_geo_and_export(small_dataset, tmp_path):
    ds, manifest, vectors = small_dataset
    views = fo_standard_views(ds, label="3")
    assert len(views["label-3"]) == 6 and set(views["label-3"].values("ground_truth.label")) == {"3"}
    speaker_views = [name for name in views if name.startswith("speaker-")]
    assert speaker_views and "geo-box" in views
    combo = next(name for name in views if name.startswith("label-3-and-split-"))
    assert len(views[combo]) > 0 and set(views[combo].values("ground_truth.label")) == {"3"}
    assert set(views[combo].values("split")) == {combo.rsplit("-", 1)[1]}
    assert set(views["geo-box-and-label-3"].values("ground_truth.label")) == {"3"}
    assert set(ds.list_saved_views()) >= set(views)
    assert len(ds.load_saved_view("label-3")) == 6
    # per-class coordinates from a CSV; unknown classes fall back to synthetic ones
    csv = tmp_path / "coords.csv"
    pd.DataFrame({"label": [0, 1], "lon": [2.35, -74.0], "lat": [48.85, 40.7]}).to_csv(csv, index=False)
    lonlat, source = fo_geolocations(manifest, coords_csv=csv)
    zero = (manifest.label == 0).to_numpy()
    assert np.allclose(lonlat[zero].mean(axis=0), [2.35, 48.85], atol=1.0) and set(source[zero]) == {"csv-class"}
    assert set(source[(manifest.label == 5).to_numpy()]) == {"synthetic"}
    per_file = tmp_path / "files.csv"
    pd.DataFrame({"filename": [os.path.basename(manifest.path[0])], "longitude": [13.4], "latitude": [52.5]}).to_csv(
        per_file, index=False
    )
    lonlat, source = fo_geolocations(manifest, coords_csv=per_file)
    assert np.allclose(lonlat[0], [13.4, 52.5]) and source[0] == "csv-file" and set(source[1:]) == {"synthetic"}
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"label": [0], "lon": [500], "lat": [0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="outside"):
        fo_geolocations(manifest, coords_csv=bad)
    table = fo_export_table(manifest, vectors, {"pca": {"points": vectors[:, :2]}}, tmp_path / "t.csv", fmt="csv")
    back = pd.read_csv(tmp_path / "t.csv")
    assert back.shape == table.shape and f"emb_{vectors.shape[1] - 1}" in back.columns and "pca_x" in back.columns


def test_umap_map_with_exposed_parameters_and_its_cache(small_dataset, tmp_path):
    ds, manifest, vectors = small_dataset
    maps = fo_compute_maps(
        ds, vectors, methods=["umap", "pca"], umap_n_neighbours=8, umap_min_dist=0.3, cache_dir=tmp_path
    )
    points = maps["umap"]["points"]
    assert points.shape == (60, 2) and np.isfinite(points).all() and points.std(axis=0).min() > 0
    assert maps["umap"]["options"]["num_neighbors"] == 8 and not maps["umap"]["cached"]
    assert ds.get_brain_info("map_umap").config.min_dist == 0.3
    again = fo_compute_maps(
        ds, vectors, methods=["umap", "pca"], umap_n_neighbours=8, umap_min_dist=0.3, cache_dir=tmp_path
    )
    assert again["umap"]["cached"] and np.array_equal(again["umap"]["points"], points)
    assert ds.has_brain_run("map_umap") and "map_umap" in ds.info["audiolens"]["brain_keys"]
    cached_file = next(tmp_path.glob("umap-*.npy"))
    cached_file.write_bytes(b"garbage")  # an unreadable cache file is a miss, said and rebuilt
    third = fo_compute_maps(ds, vectors, methods=["umap"], umap_n_neighbours=8, umap_min_dist=0.3, cache_dir=tmp_path)
    assert not third["umap"]["cached"] and np.load(cached_file).shape == (60, 2)


def test_app_serves_its_page_and_stops_completely(small_dataset, capsys):
    import psutil

    ds, _, _ = small_dataset
    assert fo_execution_context() == "script"
    port = free_port()
    assert fo_launch_app(ds, port=port, when="auto") is None  # not interactive: never launched
    session = fo_launch_app(ds, port=port, remote=True, when="always")
    assert f"localhost:{port}" in capsys.readouterr().out or str(port) in session.url
    from fiftyone.core.session import session as fos

    service = fos._server_services[port]
    processes = [psutil.Process(service.child.pid)] + psutil.Process(service.child.pid).children(recursive=True)
    assert len(processes) >= 2, "expected the service process and its web server"
    page, deadline = None, time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                page = response.read().decode(errors="replace")
                status = response.status
            break
        except OSError:
            time.sleep(1)
    try:
        assert page is not None, "the App did not answer within 90 s"
        assert status == 200 and "<html" in page.lower() and "fiftyone" in page.lower()
        # the playback slice's video is served to the browser (this is what the App's video player loads)
        mp4 = ds.select_group_slices("playback").first().filepath
        url = f"http://127.0.0.1:{port}/media?filepath={urllib.parse.quote(mp4)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body, content_type = response.read(), response.headers.get("content-type", "")
        assert content_type.startswith("video/mp4") and body == open(mp4, "rb").read()
    finally:
        stopped = fo_stop_app(session)
    assert set(stopped) >= {p.pid for p in processes}
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3)


def test_execution_context_never_treats_batch_runs_as_interactive(monkeypatch):
    import IPython

    import lib.explorer.fo_app as foa

    class ZMQInteractiveShell:  # what a Jupyter kernel reports
        pass

    for variable in (
        "JPY_SESSION_NAME",
        "VSCODE_PID",
        "VSCODE_CWD",
        "AUDIOLENS_BATCH",
        "PAPERMILL_EXECUTION",
        "COLAB_RELEASE_TAG",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    cases = {
        ("/usr/bin/python /usr/bin/jupyter-lab --port 8888",): "notebook",
        ("/venv/bin/python /venv/bin/papermill in.ipynb out.ipynb",): "papermill",
        ("/venv/bin/python /venv/bin/audiolens run fiftyone_explorer",): "papermill",
        ("python -m ipykernel_launcher -f k.json", "/usr/bin/jupyter-lab"): "papermill",  # papermill in a notebook
        ("python -c import sys;exec(eval(sys.stdin.readline()))", "python -m pytest -n 2"): "papermill",
        ("/usr/bin/some-unknown-driver",): "papermill",
    }
    for parents, expected in cases.items():
        monkeypatch.setattr(foa, "_fo_parent_cmdlines", lambda parents=parents: list(parents))
        assert fo_execution_context() == expected, parents
    monkeypatch.setattr(foa, "_fo_parent_cmdlines", lambda: ["/usr/bin/some-unknown-driver"])
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/explore.ipynb")
    assert fo_execution_context() == "notebook"
    monkeypatch.setenv("AUDIOLENS_BATCH", "1")
    assert fo_execution_context() == "papermill"
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    monkeypatch.delenv("AUDIOLENS_BATCH")
    assert fo_execution_context() == "script"
