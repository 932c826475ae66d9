"""Answering with a model folder (what ``python -m fastgradmix.predict`` does): decoded images through the
compiled program, scored by top-k class similarity against the bank (Algorithm 1), a known class or
"unknown" per image, printed as text or JSON lines with the problems of unreadable inputs in between.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import torch

from fastgradmix.deploy.image_inputs import OUT_OF_MEMORY, ImageProblem, list_images, preprocess, read_image
from fastgradmix.deploy.model_folder import DeployedModel
from fastgradmix.deploy.printable import printable
from fastgradmix.deploy.program import check_program_shapes, load_program
from fastgradmix.evaluation.topk_similarity import class_topk_scores, osr_predict

PROG = "fastgradmix.predict"  # the name its problem lines carry
UNKNOWN = "unknown"


@dataclass
class Prediction:
    path: str
    nearest_class: str  # the best-scoring known class, also when the image is called unknown
    score: float  # open-set score: the best class's top-k similarity sum
    threshold: float

    @property
    def known(self) -> bool:
        return self.score >= self.threshold

    @property
    def label(self) -> str:
        return self.nearest_class if self.known else UNKNOWN

    def text(self) -> str:
        return f"{printable(self.path)}\t{self.label}\tscore={self.score:.6f}\tthreshold={self.threshold:.6f}"

    def json(self) -> str:
        return json.dumps({"path": self.path, "prediction": self.label, "known": self.known,
                           "nearest_class": self.nearest_class, "score": self.score, "threshold": self.threshold})


class Predictor:
    """A loaded model folder on one device: images (decoded) -> predictions, a batch at a time."""

    def __init__(self, model: DeployedModel, device: torch.device):
        self.model, self.device = model, device
        program_path = model.program_path(device.type)
        self.program = load_program(program_path, device)
        prep = model.preprocessing
        check_program_shapes(self.program, program_path, prep.channels, prep.image_size, model.bank_features.shape[1])
        self.bank = model.bank_features.to(device)  # (N, D)
        self.bank_labels = model.bank_labels.to(device)  # (N,)

    @torch.no_grad()
    def prepare(self, path: str) -> torch.Tensor:
        """An image file -> its model input (1, C, S, S) float32 on the device, made as soon as the image is
        read so a pending batch holds inputs of the model's size, not whole decoded images. Any problem,
        running out of memory included, is an ImageProblem: that image's line, and the run goes on."""
        try:
            return preprocess([read_image(path)], self.model.preprocessing, self.device)
        except MemoryError:
            raise ImageProblem(OUT_OF_MEMORY) from None
        except RuntimeError as err:  # torch's allocators: "can't allocate memory", torch.OutOfMemoryError
            if isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err):
                raise ImageProblem(OUT_OF_MEMORY) from None
            raise

    @torch.no_grad()
    def predict(self, paths: list[str], inputs: list[torch.Tensor]) -> list[Prediction]:
        """Prepared inputs, each (1, C, S, S) -> one Prediction per path."""
        features = self.program(torch.cat(inputs))  # (N, D)
        class_scores = class_topk_scores(features, self.bank, self.bank_labels, len(self.model.class_names),
                                         k=self.model.topk)  # (N, K)
        best_class, best_score = osr_predict(class_scores)
        best_class, best_score = best_class.cpu().tolist(), best_score.cpu().tolist()
        names = self.model.class_names
        return [Prediction(path, names[index], score, self.model.threshold)
                for path, index, score in zip(paths, best_class, best_score, strict=True)]


NON_FINITE = "the model gave a non-finite score (NaN or infinite features); check the model folder"


def run_predictions(predictor: Predictor, inputs: list[str], batch_size: int, as_json: bool, out=None,
                    err=None) -> tuple[int, int]:
    """Prints a line per image on ``out`` (default stdout), problems on ``err`` (default stderr); returns
    (scored, problems). A problem line is ``PROG: error: PATH: why`` with the path escaped (printable)."""
    out, err = out or sys.stdout, err or sys.stderr
    scored = problems = 0
    pending_paths: list[str] = []
    pending_inputs: list[torch.Tensor] = []  # each (1, C, S, S)

    def problem(path: str, why: str) -> None:
        nonlocal problems
        print(f"{PROG}: error: {printable(path)}: {why}", file=err)
        problems += 1

    def flush() -> None:
        nonlocal scored
        if pending_paths:
            for prediction in predictor.predict(pending_paths, pending_inputs):
                if not math.isfinite(prediction.score):
                    problem(prediction.path, NON_FINITE)
                    continue
                print(prediction.json() if as_json else prediction.text(), file=out)
                scored += 1
            out.flush()
            pending_paths.clear()
            pending_inputs.clear()

    for path, listing_problem in list_images(inputs):
        if listing_problem is not None:
            problem(path, listing_problem)
        else:
            try:
                pending_inputs.append(predictor.prepare(path))
                pending_paths.append(path)
            except ImageProblem as error:
                problem(path, str(error))
        if len(pending_paths) == batch_size:
            flush()
    flush()
    return scored, problems
