"""Real training runs: Ray Train with CPU workers (DDP over gloo), the real SmolLM2, the starter dialogues,
a few steps of short sequences, over real gRPC. Each starts a local Ray cluster (~20-100 s here)."""

from __future__ import annotations

import time

import grpc
import pytest

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.core.models import chat_model_path, load_chat_tokenizer
from tutorforge.training.data import padded_batches, tokenize_records
from tutorforge.training.loop import evaluate_loss
from tutorforge.v1 import common_pb2, inference_pb2, inference_pb2_grpc, jobs_pb2, training_pb2, training_pb2_grpc

pytestmark = pytest.mark.slow

FAST = dict(batch_size=2, gradient_accumulation_steps=1, max_seq_length=256, learning_rate=1e-3)


def request(max_steps: int, **arguments) -> training_pb2.StartTrainingRequest:
    return training_pb2.StartTrainingRequest(
        dataset="starter",
        adapter_name="socratic",
        arguments=training_pb2.TrainingArguments(max_steps=max_steps, **{**FAST, **arguments}),
        resources=training_pb2.ResourceConfig(num_workers=2),
        metadata={"subject": "mathematics", "grade_level": "elementary", "teaching_style": "socratic"},
    )


def wait_for(stub, job_id: str, predicate, timeout: float = 600) -> common_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)).job
        if predicate(job):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")


def events_of(stub, job_id: str) -> list[common_pb2.JobEvent]:
    return [response.event for response in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id))]


def mean_loss(model, examples, pad: int) -> float:
    total, tokens = evaluate_loss(model, padded_batches(examples, 4, pad), "cpu")
    return total / tokens


def test_training_publishes_an_adapter_that_fits_the_data(serve, starter_dataset, starter_records) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    running, channel = serve("training", "inference")
    store = running.runtime.store
    starter_dataset(store, train=24, validation=6)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    job = stub.StartTraining(request(8, eval_steps=4, checkpoint_steps=4)).job
    events = events_of(stub, job.id)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.result == "socratic"

    # Per-step metrics streamed as events, in order, with an evaluation every 4 steps.
    steps = [e for e in events if "loss" in e.metrics]
    assert [e.step for e in steps] == list(range(1, 9))
    assert all(e.total_steps == 8 for e in steps)
    for name in ("loss", "learning_rate", "grad_norm", "tokens_per_second"):
        assert all(e.metrics[name] > 0 for e in steps[1:]), name
    assert [e.step for e in steps if "eval_loss" in e.metrics] == [4, 8]
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)

    # Published with lineage and metadata; the run keeps TensorBoard events and a loss curve.
    settings = running.runtime.settings
    adapter = AdapterRegistry(store).get("socratic")
    assert adapter.base_model == "SmolLM2-135M-Instruct" and adapter.rank == 16
    assert adapter.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert adapter.metadata["subject"] == "mathematics" and adapter.metadata["teaching_style"] == "socratic"
    assert adapter.lineage["job_id"] == job.id
    assert (
        adapter.lineage["dataset"]["name"] == "starter"
        and adapter.lineage["dataset"]["version"] == job.labels["dataset_version"]
    )
    assert adapter.lineage["hyperparameters"]["arguments"]["learning_rate"] == pytest.approx(1e-3)
    assert adapter.lineage["metrics"]["final_loss"] == pytest.approx(job.metrics["final_loss"])
    training = adapter.lineage["training"]
    assert training["steps"] == 8 and training["stopped_early"] is False
    assert training["best_step"] in (4, 8) and training["published_step"] == training["best_step"]
    assert adapter.metadata["training.steps"] == "8" and adapter.metadata["training.stopped_early"] == "false"
    assert "chat_template.jinja" in adapter.files or "tokenizer_config.json" in adapter.files
    run = f"training/runs/{job.id}"
    assert store.read_bytes(f"{run}/loss_curve.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("tfevents" in key for key in store.walk(f"{run}/tensorboard"))

    # The adapter fits the training dialogues better than the base model, and changes what it says.
    tokenizer = load_chat_tokenizer(settings.models)
    examples = tokenize_records(tokenizer, starter_records[:8], 256).examples
    base = AutoModelForCausalLM.from_pretrained(chat_model_path(settings.models), dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "I think 1/3 + 1/3 = 2/6. Am I right?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        before_text = tokenizer.decode(base.generate(**inputs, max_new_tokens=16, do_sample=False)[0])
    base_loss = mean_loss(base, examples, tokenizer.pad_token_id)
    tuned = PeftModel.from_pretrained(
        base, str(AdapterRegistry(store).materialize(adapter, settings.models.cache_dir))
    )
    tuned_loss = mean_loss(tuned, examples, tokenizer.pad_token_id)
    with torch.no_grad():
        after_text = tokenizer.decode(tuned.generate(**inputs, max_new_tokens=16, do_sample=False)[0])
    assert tuned_loss < base_loss - 0.1, (base_loss, tuned_loss)
    assert after_text != before_text

    # The inference service loads the published adapter by name, and it changes the reply.
    inference = inference_pb2_grpc.InferenceServiceStub(channel)

    def chat(adapter: str) -> inference_pb2.ChatResponse:
        return inference.Chat(
            inference_pb2.ChatRequest(
                messages=[
                    common_pb2.ChatMessage(role="user", content="I think 1/3 + 1/3 = 2/6. Am I right?")
                ],
                model=inference_pb2.ModelSelection(adapter=adapter),
                parameters=inference_pb2.GenerationParameters(max_tokens=16),
                retrieval=inference_pb2.RetrievalOptions(enabled=False),
            )
        )

    served = chat("socratic")
    assert served.summary.adapter == "socratic"
    assert served.message.content != chat("").message.content


def test_early_stopping_publishes_the_best_evaluated_weights(serve, starter_dataset, starter_records) -> None:
    """An absurd learning rate: the first step is still warm-up (lr 0, so the base model's validation
    loss), every later step makes the validation loss worse; after `patience` such evaluations the run
    stops, and the adapter published is the best evaluated one, not the last."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    running, channel = serve("training")
    store = running.runtime.store
    starter_dataset(store, train=8, validation=4)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    start = request(10, learning_rate=1.0, eval_steps=1, early_stopping_patience=2)
    start.resources.num_workers = 1
    job = stub.StartTraining(start).job
    events = events_of(stub, job.id)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    steps = [e for e in events if "loss" in e.metrics]
    evals = [(e.step, e.metrics["eval_loss"]) for e in steps if "eval_loss" in e.metrics]
    assert [step for step, _ in evals] == [1, 2, 3]
    assert evals[1][1] > evals[0][1] and evals[2][1] > evals[0][1]
    assert job.metrics["stopped_early"] == 1.0 and job.metrics["best_step"] == 1.0
    assert job.metrics["best_eval_loss"] == pytest.approx(evals[0][1])
    assert any("stopped early at step 3" in e.message for e in events)

    adapter = AdapterRegistry(store).get("socratic")
    training = adapter.lineage["training"]
    assert training["stopped_early"] is True and training["steps"] == 3 and training["planned_steps"] == 10
    assert training["published_step"] == 1 and training["best_eval_loss"] == pytest.approx(evals[0][1])
    assert adapter.metadata["training.stopped_early"] == "true"

    # The published weights score the best evaluation's loss on the validation split, not the last one's.
    settings = running.runtime.settings
    tokenizer = load_chat_tokenizer(settings.models)
    validation = tokenize_records(tokenizer, starter_records[8:12], 256).examples
    base = AutoModelForCausalLM.from_pretrained(chat_model_path(settings.models), dtype=torch.float32)
    tuned = PeftModel.from_pretrained(
        base, str(AdapterRegistry(store).materialize(adapter, settings.models.cache_dir))
    )
    assert mean_loss(tuned, validation, tokenizer.pad_token_id) == pytest.approx(evals[0][1], rel=1e-3)


def test_a_worker_crash_resumes_from_the_last_checkpoint(serve, starter_dataset) -> None:
    """The last worker exits (os._exit) once just before step 4; Ray Train restarts the worker group
    (FailureConfig) and the new workers continue from the step-2 checkpoint, so the run finishes."""
    running, channel = serve("training", training__test_fault_step=4)
    store = running.runtime.store
    starter_dataset(store, train=16, validation=0)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    job = stub.StartTraining(request(5, checkpoint_steps=2)).job
    events = events_of(stub, job.id)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    assert store.exists(f"training/runs/{job.id}/fault-injected")
    # Step 3 ran, the crash came before step 4, the restarted workers began again after the step-2
    # checkpoint: step 3 twice, steps 1-2 once (a restart from scratch would repeat them too).
    assert [e.step for e in events if "loss" in e.metrics] == [1, 2, 3, 3, 4, 5]
    assert any("resumed from the last checkpoint" in e.message for e in events)
    history = store.read_json(f"training/runs/{job.id}/metrics.json")
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5]
    assert AdapterRegistry(store).get("socratic").lineage["job_id"] == job.id


def test_cancel_keeps_the_checkpoint_and_resume_finishes(serve, starter_dataset) -> None:
    running, channel = serve("training")
    store = running.runtime.store
    starter_dataset(store, train=16, validation=0)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    job = stub.StartTraining(request(6, checkpoint_steps=1)).job
    wait_for(stub, job.id, lambda j: j.metrics.get("step_seconds", 0) > 0)
    stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id))
    job = wait_for(stub, job.id, lambda j: j.state != common_pb2.JOB_STATE_RUNNING)
    assert job.state == common_pb2.JOB_STATE_CANCELLED
    assert "checkpoint is kept" in job.message
    run = f"training/runs/{job.id}"
    checkpoints = [name for name in store.list(run) if name.startswith("checkpoint-")]
    assert checkpoints, "the last checkpoint must survive a cancel"
    stopped_at = max(r["step"] for r in store.read_json(f"{run}/metrics.json"))
    assert stopped_at < 6
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    resumed = stub.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=job.id)).job
    assert resumed.id == job.id and resumed.state == common_pb2.JOB_STATE_QUEUED
    events = events_of(stub, job.id)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    # Continued from the checkpoint taken at the cancel: across both attempts every step ran once.
    assert [e.step for e in events if "loss" in e.metrics] == list(range(1, 7))
    assert [r["step"] for r in store.read_json(f"{run}/metrics.json")] == list(range(1, 7))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=job.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_job_survives_a_service_restart_and_resumes(serve, starter_dataset, tmp_path) -> None:
    """Stop the server mid-run; a new server on the same store that does not resume by itself
    (training.resume_interrupted=false) shows the job FAILED (interrupted, with its history) and ResumeJob
    finishes it from the last checkpoint. (The default, resuming at start, is tests/reliability/test_faults.py.)"""
    running, channel = serve("training")
    store = running.runtime.store
    starter_dataset(store, train=16, validation=0)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    job = stub.StartTraining(request(5, checkpoint_steps=1)).job
    wait_for(stub, job.id, lambda j: j.metrics.get("step_seconds", 0) > 0)
    before = events_of_until_now(stub, job.id)
    running.stop(grace=1)

    running.runtime.settings.training.resume_interrupted = False
    _, channel = serve("training", settings=running.runtime.settings)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_FAILED
    assert "jobs resume" in job.error
    events = events_of(stub, job.id)
    assert [e.sequence for e in events[: len(before)]] == [e.sequence for e in before]
    stub.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=job.id))
    events_of(stub, job.id)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    assert [r["step"] for r in store.read_json(f"training/runs/{job.id}/metrics.json")] == list(range(1, 6))


def events_of_until_now(stub, job_id: str) -> list[common_pb2.JobEvent]:
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)).job
    assert job.state == common_pb2.JOB_STATE_RUNNING
    events = []
    for response in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id)):
        events.append(response.event)
        if "loss" in response.event.metrics:
            break
    return events
