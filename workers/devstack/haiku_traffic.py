"""Sample traffic for the demo: TensorZero's haiku example at scale.

Two models write haikus; end users give thumbs up/down (``haiku_rating``) and star ratings
(``haiku_stars``) after random delays.  Some feedback is sent before its prediction, some names a
prediction older than the retention, some names a prediction that never arrives, a few messages are
malformed.  The generator also returns what Postgres must hold afterwards, so the demo can check
the pipeline's numbers instead of merely printing them.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ingest.sdk.producer import build_feedback, build_prediction, uuid7
from ingest.wire.events import Feedback, Prediction
from workers.read_model.landed import NO_MODEL

# Windows of a second: the demo waits for what it sent to land, and checks it.
DEMO_PIPELINE: dict[str, Any] = {"window": "1s", "retention": "90d"}
DEMO_METRICS: dict[str, Any] = {
    "metrics": {
        "haiku_rating": {"type": "boolean", "level": "inference", "optimize": "max"},
        "haiku_stars": {"type": "float", "min": 1, "max": 5, "optimize": "max"},
    },
}
MODELS = {"gpt-haiku-a": (0.72, 4.1), "gpt-haiku-b": (0.55, 3.4)}  # P(thumbs up), mean stars
# A share of the user-rated predictions that an LLM judge rates too, and how often it agrees.
JUDGE = {"type": "llm_judge", "id": "haiku-judge-v1"}
JUDGED, JUDGE_AGREES = 0.5, 0.8
TOPICS = ["autumn rain", "a quiet pond", "city lights", "old keyboards", "first snow"]


@dataclass
class Expected:
    """What the pipeline must report, keyed by (model, metric) and by status."""

    status: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # model, metric, status
    positives: Counter[tuple[str, str]] = field(default_factory=Counter)
    star_sums: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    dead_letters: int = 0


@dataclass
class DemoTraffic:
    early_feedback: list[Feedback]  # sent first: arrives before its prediction
    predictions: list[Prediction]
    feedback: list[Feedback]
    malformed: list[bytes]
    expected: Expected


def _feedback(
    rng: random.Random,
    prediction: Prediction,
    model: str,
    delay: timedelta,
    expected: Expected,
    status: str = "joined",
) -> Feedback:
    p_up, mean_stars = MODELS[model]
    assert prediction.timestamp is not None
    when = prediction.timestamp + delay
    user = {"type": "end_user", "id": f"user-{rng.randrange(500)}"}
    value: bool | float
    if rng.random() < 0.6:
        metric, value, rationale = "haiku_rating", rng.random() < p_up, None
    else:
        stars = float(min(5, max(1, round(rng.gauss(mean_stars, 0.8)))))
        metric, value, rationale = "haiku_stars", stars, "rated in the app"
    event = build_feedback(
        metric=metric,
        prediction_id=prediction.prediction_id,
        value=value,
        source=user,
        timestamp=when,
        rationale=rationale,
    )
    expected.status[(model if status != "pending" else NO_MODEL, metric, status)] += 1
    if status == "joined" and metric == "haiku_rating" and value:
        expected.positives[(model, metric)] += 1
    elif status == "joined" and metric == "haiku_stars":
        expected.star_sums[(model, metric)] += float(value)
    return event


def _judge(
    rng: random.Random, prediction: Prediction, model: str, user: Feedback, expected: Expected
) -> Feedback:
    """An LLM judge's thumbs on a prediction a user rated too: the same verdict most of the
    time, so the report's agreement (Cohen's kappa, judge against end users) has items."""
    assert user.timestamp is not None
    value = user.value if rng.random() < JUDGE_AGREES else not user.value
    expected.status[(model, "haiku_rating", "joined")] += 1
    if value:
        expected.positives[(model, "haiku_rating")] += 1
    return build_feedback(
        metric="haiku_rating",
        prediction_id=prediction.prediction_id,
        value=value,
        source=JUDGE,
        timestamp=user.timestamp + timedelta(minutes=1),
        rationale="the syllables count 5-7-5" if value else "the second line runs long",
    )


def haiku_traffic(now: datetime, predictions: int = 3000, seed: int = 7) -> DemoTraffic:
    rng = random.Random(seed)
    expected = Expected()
    early: list[Feedback] = []
    sent: list[Prediction] = []
    later: list[Feedback] = []
    for i in range(predictions):
        model = "gpt-haiku-a" if i % 2 == 0 else "gpt-haiku-b"
        ts = now - timedelta(days=rng.uniform(0.5, 30))
        prediction = build_prediction(
            prediction_id=uuid7(int(ts.timestamp() * 1000)),
            application="generate_haiku",
            model=model,
            timestamp=ts,
            inputs={"topic": rng.choice(TOPICS)},
            outputs={
                "haiku": "words on a screen / a model counts syllables / feedback comes later"
            },
            tags={"env": "demo"},
        )
        roll = rng.random()
        if roll < 0.05:  # the prediction never arrives (lost upstream): feedback stays pending
            later.append(
                _feedback(rng, prediction, model, timedelta(minutes=5), expected, status="pending")
            )
            continue
        sent.append(prediction)
        if roll < 0.15:  # backfill order: feedback first, its prediction in a later window
            user = _feedback(
                rng, prediction, model, timedelta(seconds=rng.uniform(5, 600)), expected
            )
            early.append(user)
        elif roll < 0.55:  # minutes to days later
            user = _feedback(
                rng, prediction, model, timedelta(seconds=rng.expovariate(1 / 7200)), expected
            )
            later.append(user)
        else:
            continue
        if user.metric == "haiku_rating" and rng.random() < JUDGED:
            later.append(_judge(rng, prediction, model, user, expected))
    for _ in range(predictions // 100):  # labels for predictions retention already dropped
        old = now - timedelta(days=rng.uniform(95, 120))
        ghost = build_prediction(
            prediction_id=uuid7(int(old.timestamp() * 1000)),
            application="generate_haiku",
            model="gpt-haiku-a",
            timestamp=old,
        )
        event = build_feedback(
            metric="haiku_rating",
            prediction_id=ghost.prediction_id,
            value=True,
            timestamp=now - timedelta(minutes=1),
        )
        later.append(event)
        expected.status[(NO_MODEL, "haiku_rating", "expired")] += 1
    malformed = [
        b'{"feedback_id": "not json',
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000001", "metric": "haiku_vibes",'
        b' "join_key": "x", "value": true}',
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000002", "metric": "haiku_stars",'
        b' "join_key": "x", "value": "five"}',
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000003", "metric": "haiku_rating",'
        b' "episode_id": "0196b0f6-0000-7000-8000-000000000009", "value": true}',
        b'{"metric": "haiku_rating", "join_key": "x", "value": true}',
    ]
    expected.dead_letters = len(malformed)
    return DemoTraffic(early, sent, later, malformed, expected)
