"""Documents: turning uploaded bytes into text, and the per-document records kept in the artifact
store (`documents/<id>.json`), which are the only durable state of the service besides Qdrant."""

from __future__ import annotations

import io
import mimetypes
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.names import validate_name

TEXT, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"
CONTENT_TYPES = (TEXT, MARKDOWN, HTML, PDF)
_BY_EXTENSION = {".txt": TEXT, ".text": TEXT, ".md": MARKDOWN, ".markdown": MARKDOWN, ".html": HTML, ".htm": HTML, ".pdf": PDF}
_EXTRA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
SEED_FIELDS = ("source", "category", "topic")


@dataclass
class DocumentMetadata:
    source: str = ""
    category: str = ""
    topic: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def validate(self) -> DocumentMetadata:
        for key in self.extra:
            if not _EXTRA_KEY.match(key) or key in (*SEED_FIELDS, "document_id"):
                raise InvalidArgument(
                    f"metadata.extra key {key!r} is not valid: use 1-64 letters, digits, '_' or '-', starting with a "
                    "letter, and not one of source, category, topic, document_id"
                )
        return self


@dataclass
class DocumentRecord:
    """What is stored about one document; `version` is what its active chunks carry."""

    document_id: str
    version: str
    content_hash: str
    filename: str
    content_type: str
    metadata: DocumentMetadata
    chunk_count: int
    size_bytes: int
    ingested_at_unix: int
    chunk_size_tokens: int
    chunk_overlap_tokens: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DocumentRecord:
        return cls(**{**data, "metadata": DocumentMetadata(**data["metadata"])})


def document_id_for(requested: str, filename: str) -> str:
    """The caller's id, or one derived from the filename ("Fractions 101.md" -> "fractions-101")."""
    if requested:
        return validate_name(requested, "document.document_id")
    stem = PurePosixPath(filename.replace("\\", "/")).stem
    derived = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:64]
    if not derived:
        raise InvalidArgument("document.document_id is empty and document.filename gives no usable id: set one of them")
    return validate_name(derived, "document.document_id (derived from document.filename)")


def content_type_for(requested: str, filename: str) -> str:
    if requested:
        content_type = requested.split(";")[0].strip().lower()
        if content_type not in CONTENT_TYPES:
            raise InvalidArgument(
                f"document.content_type {requested!r} is not supported; use one of {', '.join(CONTENT_TYPES)}"
            )
        return content_type
    suffix = PurePosixPath(filename).suffix.lower()
    guessed = _BY_EXTENSION.get(suffix) or mimetypes.guess_type(filename)[0]
    if guessed not in CONTENT_TYPES:
        raise InvalidArgument(
            f"cannot tell the type of {filename!r} (extension {suffix or 'none'}): set document.content_type to one "
            f"of {', '.join(CONTENT_TYPES)} or use a .txt/.md/.html/.pdf file"
        )
    return guessed


def extract_text(data: bytes, content_type: str, name: str) -> str:
    """The document's plain text; InvalidArgument when it cannot be read or holds no text."""
    if not data:
        raise InvalidArgument(f"document {name!r} is empty: send its content after the header")
    if content_type == PDF:
        text = _pdf_text(data, name)
    else:
        text = _decode(data, name)
        if content_type == HTML:
            text = _html_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if not text.strip():
        raise InvalidArgument(f"document {name!r} contains no text ({content_type}); nothing to index")
    return text


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"document {name!r} is not valid UTF-8 (byte {error.start}: {data[error.start:error.start + 1]!r}); "
            "re-encode it as UTF-8 or send it as application/pdf if it is a PDF"
        ) from None


def _html_text(markup: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for hidden in soup(["script", "style", "noscript", "template", "head"]):
        hidden.decompose()
    # Block elements end with a newline so that sentences and headings stay apart.
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _pdf_text(data: bytes, name: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidArgument(f"document {name!r} is an encrypted PDF; upload an unencrypted copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise InvalidArgument(f"document {name!r} is not a readable PDF ({error}); check the file or its content_type") from None
    text = "\n\n".join(page.strip() for page in pages)
    if not text.strip():
        raise InvalidArgument(f"document {name!r} is a PDF without extractable text (scanned?); OCR it first")
    return text


class DocumentCatalog:
    """Document records in the artifact store, one JSON file each (written atomically)."""

    PREFIX = "documents"

    def __init__(self, store: ArtifactStore):
        self.store = store

    def _key(self, document_id: str) -> str:
        return f"{self.PREFIX}/{validate_name(document_id, 'document_id')}.json"

    def find(self, document_id: str) -> DocumentRecord | None:
        key = self._key(document_id)
        if not self.store.exists(key):
            return None
        return DocumentRecord.from_json(self.store.read_json(key))

    def get(self, document_id: str) -> DocumentRecord:
        record = self.find(document_id)
        if record is None:
            raise NotFound(f"document {document_id!r} does not exist; list documents with ListDocuments")
        return record

    def put(self, record: DocumentRecord) -> None:
        self.store.write_json(self._key(record.document_id), asdict(record))

    def remove(self, document_id: str) -> None:
        self.store.delete(self._key(document_id))

    def all(self) -> list[DocumentRecord]:
        return [
            DocumentRecord.from_json(self.store.read_json(f"{self.PREFIX}/{name}"))
            for name in self.store.list(self.PREFIX)
            if name.endswith(".json")
        ]
