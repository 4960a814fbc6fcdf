"""The pedagogical metric's components on hand-made replies."""

from __future__ import annotations

import pytest

from tutorforge.core.errors import InvalidArgument
from tutorforge.optimization.metrics import (
    MetricWeights,
    context_usage,
    ends_with_question,
    length_ratio,
    pedagogical_elements,
    pedagogical_moves,
    reveals_answer,
    score_response,
    socratic,
)

CONTEXT = (
    "Photosynthesis turns light energy, water and carbon dioxide into glucose and oxygen inside chloroplasts."
)


def test_context_usage_is_the_share_of_context_content_words_used() -> None:
    # Content words of the context: photosynthesis turns light energy water carbon dioxide glucose oxygen inside
    # chloroplasts -> 11; the reply uses light, energy, chloroplasts.
    assert context_usage("Where does the light energy go in the chloroplasts?", CONTEXT) == pytest.approx(
        3 / 11
    )
    assert context_usage("I like turtles.", CONTEXT) == 0.0
    assert context_usage(CONTEXT, CONTEXT) == 1.0
    # Function words do not count as using the material.
    assert context_usage("the and into", CONTEXT) == 0.0
    assert context_usage("anything", "") == 0.0


def test_pedagogical_elements_counts_the_four_teaching_moves() -> None:
    assert pedagogical_elements("Plants are green.") == 0.0
    assert pedagogical_moves("What do plants need?") == {
        "question": True,
        "example": False,
        "explanation": False,
        "engagement": False,
    }
    full = "Let's think: for example, a leaf in the dark stops, because light is needed. Why might that be?"
    assert pedagogical_elements(full) == 1.0
    # Markers are whole words: "likely" is not "like", "trying" is not "try".
    assert pedagogical_moves("It is likely that trying works.")["example"] is False
    assert pedagogical_moves("It is likely that trying works.")["engagement"] is False


def test_length_ratio_is_symmetric_and_one_for_equal_lengths() -> None:
    assert length_ratio("one two three four", "a b c d") == 1.0
    assert length_ratio("one two", "a b c d") == 0.5
    assert length_ratio("a b c d", "one two") == 0.5
    assert length_ratio("", "a b") == 0.0
    assert length_ratio("a b", "") == 0.0


def test_socratic_signals() -> None:
    assert ends_with_question("What would happen without light?")
    assert ends_with_question('Ask yourself: "what is left over?"  ')
    assert not ends_with_question("Is it light? Yes, it is light.")
    assert reveals_answer("The answer is 42.")
    assert reveals_answer("So x equals 4, since 2x = 8.", final_answer="x equals 4")
    assert not reveals_answer("What could x be if 2x = 8?", final_answer="4")
    assert socratic("What could x be if 2x = 8?", final_answer="4") == 1.0
    assert socratic("The answer is 4.") == 0.0
    assert socratic("The answer is 4. Does that make sense?") == 0.5


def test_default_weights_are_the_seeds_40_30_30() -> None:
    reply = "Let's see: for example light energy enters the chloroplasts, because plants need glucose. What comes out?"
    reference = "What do you think the chloroplasts make from light energy, water and carbon dioxide?"
    result = score_response(reply, context=CONTEXT, reference=reference, weights=MetricWeights())
    expected = (
        0.4 * context_usage(reply, CONTEXT)
        + 0.3 * pedagogical_elements(reply)
        + 0.3 * length_ratio(reply, reference)
    )
    assert result.score == pytest.approx(expected)
    assert result.similarity is None


def test_weights_are_normalised_and_include_socratic_and_similarity() -> None:
    weights = MetricWeights(context_usage=0, pedagogical_elements=0, length_ratio=0, socratic=1, similarity=1)
    result = score_response("The answer is 4.", context="", reference="x", weights=weights, similarity=0.5)
    assert result.score == pytest.approx((0.0 + 0.5) / 2)
    with pytest.raises(InvalidArgument, match="no embedder"):
        score_response("x", context="", reference="x", weights=weights)


@pytest.mark.parametrize(
    "weights",
    [
        {"context_usage": 0, "pedagogical_elements": 0, "length_ratio": 0},
        {"context_usage": -1, "pedagogical_elements": 0.5, "length_ratio": 0.5},
        {"context_usage": float("nan")},
    ],
)
def test_weights_must_sum_to_a_positive_number(weights: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument, match="weights"):
        MetricWeights.from_overrides(**weights)


def test_feedback_names_what_to_change() -> None:
    weights = MetricWeights()
    result = score_response("The answer is 4.", context=CONTEXT, reference="a b c d e f g h", weights=weights)
    feedback = result.feedback(weights)
    assert "Do not reveal the final answer" in feedback
    assert "guiding question" in feedback
    assert "question" in feedback and "example" in feedback


def test_bootstrapping_keeps_only_socratic_cited_replies_as_demonstrations() -> None:
    import dspy

    from tutorforge.core.teaching import Citation
    from tutorforge.optimization.metrics import MetricWeights
    from tutorforge.optimization.program import PedagogicalMetric

    metric = PedagogicalMetric(MetricWeights())
    example = dspy.Example(
        query="Where does a tree's mass come from?", history=[], response="What goes into a leaf through its pores?",
        final_answer="carbon dioxide", context="",
    ).with_inputs("query", "history")
    passages = [Citation("[1]", "bio", 0, "biology.md", 0.9, "Leaves take in carbon dioxide.")]

    def judged(reply: str, trace: object) -> object:
        return metric(example, dspy.Prediction(response=reply, passages=passages), trace)

    socratic = "Let's think. Leaves take in a gas through their pores [1]. Which gas could add carbon to the wood?"
    assert judged(socratic, []) is True
    assert judged("The mass comes from carbon dioxide in the air [1]. Does that make sense?", []) is False
    assert judged("Leaves take in a gas through their pores. Which gas could add carbon to the wood?", []) is False
    assert judged("Leaves take in a gas through their pores [1].", []) is False
    # Outside bootstrapping the metric is the score, for every reply.
    assert 0 < judged(socratic, None) <= 1 and isinstance(judged(socratic, None), float)


def test_a_demonstration_must_reach_the_demo_bar() -> None:
    """A run sets the bar to the unoptimized program's validation mean: a Socratic, cited reply that scores
    below it (shorter, fewer teaching moves) is not copied, one that reaches it is."""
    import dspy

    from tutorforge.core.teaching import Citation
    from tutorforge.optimization.metrics import MetricWeights
    from tutorforge.optimization.program import PedagogicalMetric

    example = dspy.Example(
        query="Where does a tree's mass come from?", history=[], context="",
        response="Let's think about what a leaf takes in. For example, what gas goes in through its pores, and why "
        "could that gas add carbon to the wood because wood is mostly carbon?",
    ).with_inputs("query", "history")
    passages = [Citation("[1]", "bio", 0, "biology.md", 0.9, "Leaves take in carbon dioxide through their pores.")]
    plain = "Leaves take in a gas [1]. Which gas is it?"
    rich = (
        "Let's think about it. Leaves take in carbon dioxide through their pores [1], because wood is mostly carbon; "
        "for example, a log is carbon you can hold. Which gas could add carbon to the wood?"
    )
    free = PedagogicalMetric(MetricWeights())
    score = {reply: free(example, dspy.Prediction(response=reply, passages=passages)) for reply in (plain, rich)}
    assert score[plain] < score[rich]
    barred = PedagogicalMetric(MetricWeights(), demo_bar=(score[plain] + score[rich]) / 2)
    assert free(example, dspy.Prediction(response=plain, passages=passages), []) is True
    assert barred(example, dspy.Prediction(response=plain, passages=passages), []) is False
    assert barred(example, dspy.Prediction(response=rich, passages=passages), []) is True
