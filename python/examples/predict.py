"""Prediction serving, as Cloudburst's paper shows it: an image through
SqueezeNet (preprocess -> 3 model replicas -> average -> top 5).

    squall node &
    python python/examples/predict.py            # the kitten in shared/models
    python python/examples/predict.py IMAGE.png --addr HOST:PORT

Stores the model and its labels on the node once (put_model also registers
the prediction DAG), then prints the top 5 classes.
"""

import argparse
import pathlib

import squall

MODELS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "models"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", nargs="?", default=str(MODELS / "kitten_224.png"))
    p.add_argument("--addr", default="127.0.0.1:7400", help="the node's host:port")
    p.add_argument("--model", default=str(MODELS / "squeezenet1.1_fp32.onnx"))
    p.add_argument("--labels", default=str(MODELS / "imagenet_labels.txt"))
    a = p.parse_args()
    with squall.connect(a.addr, timeout=60) as c:
        if "predict" not in c.list_dags():
            c.put_model("squeezenet", a.model, labels=a.labels)
        for cls, prob, label in c.predict(a.image):
            print(f"{prob:6.3f}  {label}  ({cls})")


if __name__ == "__main__":
    main()
