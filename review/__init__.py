"""svlora.review: a capture folder (`svlora serve --capture DIR`) reviewed — the queue of what
to label first, a review page, the Label Studio round trip — and turned into a CSV that
`svlora prepare` reads. The page (Gradio) is `svlora.review.page`, imported on use."""

from svlora.review.labelstudio import export_tasks, import_export
from svlora.review.queue import QueueItem, build_queue
from svlora.review.served import Prediction, prediction_of, served_schema
from svlora.review.to_manifest import ManifestCounts, write_review_manifest

__all__ = ["ManifestCounts", "Prediction", "QueueItem", "build_queue", "export_tasks", "import_export",
           "prediction_of", "served_schema", "write_review_manifest"]
