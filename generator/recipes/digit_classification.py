# %% [markdown]
# # Spoken digit classification
#
# Free Spoken Digit Dataset (3,000 clips, 6 speakers, 8 kHz): MFCC + SVM with
# cross-validation on the official split.

# %% tags=["parameters"]
data_path = None  # FSDD folder; None: $AUDIOLENS_DATA, data/, then download
output_dir = "runs/digit_classification/latest"  # results.json and figures go here
seed = 0  # random seed
max_train = None  # cap on training clips (None: all 2,700)
max_test = None  # cap on test clips (None: all 300)

# %%
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from lib.audio import load_audio_batch
from lib.datasets import load_fsdd
from lib.features import mfcc_features, pad_frames
from lib.outputs import Stopwatch, prepare_output_dir, update_results
from lib.runtime import seed_everything

seed_everything(seed)
out = prepare_output_dir(output_dir)
manifest = load_fsdd(data_path)
train = manifest[manifest.split == "train"]
test = manifest[manifest.split == "test"]
if max_train:
    train = train.sample(n=min(max_train, len(train)), random_state=seed)
if max_test:
    test = test.sample(n=min(max_test, len(test)), random_state=seed)
print(f"{len(train)} train / {len(test)} test clips")


# %%
def featurise(frame):
    waves, paths, failures = load_audio_batch(frame.path, sr=8000)
    feats = np.stack([pad_frames(mfcc_features(w, 8000, n_mfcc=40, delta_order=1), 40).ravel() for w in waves])
    labels = frame.set_index("path").loc[paths, "label"].to_numpy()
    return feats, labels


with Stopwatch() as sw:
    X_train, y_train = featurise(train)
    X_test, y_test = featurise(test)
    model = make_pipeline(StandardScaler(), SVC(C=10, gamma="scale")).fit(X_train, y_train)
accuracy = float((model.predict(X_test) == y_test).mean())
print(f"test accuracy {accuracy:.3f}")
update_results(out, svm={"test_accuracy": accuracy, "train_seconds": sw.seconds, "n_train": len(y_train)})
