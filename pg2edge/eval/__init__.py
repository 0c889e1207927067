"""Task metrics for a checkpoint (the float JAX baseline) or a bundle, on the synthetic suite or local datasets.

Metrics (`cider`, `vqa`, `detection`, `segmentation`, `ocr`) are pure python /
numpy; `datasets` / `coco_formats` read the suite JSONL, COCO captions, VQAv2 and
RefCOCO; `predictors` runs JAX or a bundle; `report.evaluate` ties them together.
JAX is imported only when a checkpoint is evaluated.
"""

from pg2edge.eval.datasets import load_dataset, load_suite, parse_spec, select
from pg2edge.eval.example import EvalExample
from pg2edge.eval.predictors import BundlePredictor, JaxPredictor, Predictor, is_bundle, open_predictor
from pg2edge.eval.report import EvalReport, evaluate

__all__ = ["BundlePredictor", "EvalExample", "EvalReport", "JaxPredictor", "Predictor", "evaluate", "is_bundle",
           "load_dataset", "load_suite", "open_predictor", "parse_spec", "select"]
