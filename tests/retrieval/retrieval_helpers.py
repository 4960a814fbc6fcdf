"""Helpers shared by the retrieval tests: small teaching texts and upload message builders."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from tutorforge.v1 import retrieval_pb2 as pb

# Small chunk sizes keep the real embedder quick; overlap stays sentence-aware.
SMALL_CHUNKS = {"retrieval__chunk_size_tokens": 48, "retrieval__chunk_overlap_tokens": 12}

PHOTOSYNTHESIS = (
    "# Photosynthesis\n\n"
    "Plants make their own food by photosynthesis. Chlorophyll in the leaves absorbs sunlight. "
    "The plant takes in carbon dioxide through small pores called stomata. "
    "Water travels up from the roots through the xylem.\n\n"
    "Using light energy, the plant turns carbon dioxide and water into glucose. Oxygen is released as a by-product. "
    "This is why forests are sometimes called the lungs of the planet."
)
VOLCANOES = (
    "Volcanoes form where molten rock called magma rises to the surface. Most volcanoes sit on the edges of "
    "tectonic plates. When pressure builds up, the volcano erupts and lava flows down its sides. "
    "Ash clouds from large eruptions can cool the climate for a year or more."
)
FRACTIONS = (
    "<html><head><title>Fractions</title><style>p {color: red}</style><script>var x = 1;</script></head>"
    "<body><h1>Adding fractions</h1><p>To add two fractions, first find a common denominator.</p>"
    "<p>For example, one half plus one third equals five sixths, because 3/6 + 2/6 = 5/6.</p>"
    "<p>Never add the denominators together.</p></body></html>"
)
ROME = (
    "The Roman Empire was ruled by emperors from 27 BC. Augustus was the first emperor. "
    "Roman engineers built roads, aqueducts and amphitheatres across Europe. "
    "The western half of the empire fell in 476 AD."
)


def header(document_id: str, filename: str, category: str = "", topic: str = "", source: str = "", **extra: str) -> pb.IngestDocumentsRequest:
    return pb.IngestDocumentsRequest(
        document=pb.DocumentHeader(
            document_id=document_id,
            filename=filename,
            metadata=pb.DocumentMetadata(source=source or filename, category=category, topic=topic, extra=extra),
        )
    )


def content(data: str | bytes, pieces: int = 1) -> list[pb.IngestDocumentsRequest]:
    raw = data.encode() if isinstance(data, str) else data
    size = max(1, -(-len(raw) // pieces))
    return [pb.IngestDocumentsRequest(content=raw[i : i + size]) for i in range(0, len(raw), size)]


def upload(*documents: tuple[pb.IngestDocumentsRequest, str | bytes]) -> list[pb.IngestDocumentsRequest]:
    messages: list[pb.IngestDocumentsRequest] = []
    for head, data in documents:
        messages.append(head)
        messages.extend(content(data, pieces=2))
    return messages


LIBRARY = (
    (header("photosynthesis", "photosynthesis.md", "biology", "plants", grade="6"), PHOTOSYNTHESIS),
    (header("volcanoes", "volcanoes.txt", "earth", "geology", grade="7"), VOLCANOES),
    (header("fractions", "fractions.html", "mathematics", "fractions", grade="5"), FRACTIONS),
    (header("rome", "rome.txt", "history", "ancient", grade="8"), ROME),
)



def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value
