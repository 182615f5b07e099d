"""Preview use case: records of a dataset version rendered through a model's tokenizer."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from danlu_kit.errors import FailedPrecondition
from danlu_registry.core.datasets import Datasets
from danlu_registry.core.models import TOKENIZER_FILES, Models
from danlu_registry.core.preview import PreviewRecordResult, preview_records


@dataclass
class PreviewResult:
    dataset_version: str
    chat_template: str
    records: list[PreviewRecordResult]


class Previews:
    """Keeps a few tokenizers loaded (keyed by tokenizer digest) so previews stay fast."""

    def __init__(
        self, datasets: Datasets, models: Models, cache_dir: Path, max_tokenizers: int = 8
    ):
        self.datasets = datasets
        self.models = models
        self.cache_dir = cache_dir
        self.max_tokenizers = max_tokenizers
        self._tokenizers: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def preview(
        self,
        *,
        version: tuple[str, str, str],
        model: tuple[str, str],
        count: int,
        chat_template: str,
        system_prompt: str,
        max_length: int,
    ) -> PreviewResult:
        record = self.datasets.get_version(*version)
        tokenizer = self._tokenizer(*model)
        rows = self.datasets.read_records(record, count)
        preview = preview_records(
            tokenizer,
            rows,
            task=record.task,
            chat_template_name=chat_template,
            system_prompt=system_prompt,
            max_length=max_length,
        )
        return PreviewResult(record.name, preview.chat_template, preview.records)

    def _tokenizer(self, project: str, model_id: str):
        model = self.models.get(project, model_id)
        if not model.tokenizer_digest:
            raise FailedPrecondition(
                f"{model.name} has no tokenizer files; preview with a base model",
                reason="TOKENIZER_MISSING",
            )
        key = model.tokenizer_digest
        with self._lock:
            if key in self._tokenizers:
                self._tokenizers.move_to_end(key)
                return self._tokenizers[key]
        directory = self.cache_dir / key.replace(":", "-")
        if not (directory / ".complete").exists():
            directory.mkdir(parents=True, exist_ok=True)
            for f in model.files:
                if f.path in TOKENIZER_FILES or f.path == "config.json":
                    self.models.store.download_file(f.object.key, directory / f.path)
            (directory / ".complete").touch()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        with self._lock:
            self._tokenizers[key] = tokenizer
            while len(self._tokenizers) > self.max_tokenizers:
                self._tokenizers.popitem(last=False)
        return tokenizer
