"""gRPC servicer of `tutorforge.v1.TrainingService`: proto ⇄ domain only (errors map in the interceptor)."""

from __future__ import annotations

import grpc

from tutorforge.core.convert import job_to_proto
from tutorforge.core.job_api import JobServicer
from tutorforge.core.runtime import Runtime
from tutorforge.training.config import TrainingSpec
from tutorforge.training.service import TrainingService
from tutorforge.v1 import jobs_pb2, training_pb2, training_pb2_grpc


def spec_from_proto(request: training_pb2.StartTrainingRequest, service: TrainingService) -> TrainingSpec:
    """Zero (unset) values take the defaults; anything else is validated as given."""
    spec = service.default_spec(request.dataset, request.adapter_name)
    spec.dataset_version = request.dataset_version
    lora, args, resources = spec.lora, spec.args, spec.resources
    given = request.lora
    lora.rank = given.rank or lora.rank
    lora.alpha = given.alpha or lora.alpha
    if given.HasField("dropout"):
        lora.dropout = given.dropout
    lora.target_modules = list(given.target_modules)
    lora.bias = given.bias or lora.bias
    a = request.arguments
    args.epochs = a.epochs or args.epochs
    args.batch_size = a.batch_size or args.batch_size
    args.gradient_accumulation_steps = a.gradient_accumulation_steps or args.gradient_accumulation_steps
    args.learning_rate = a.learning_rate or args.learning_rate
    if a.HasField("warmup_ratio"):
        args.warmup_ratio = a.warmup_ratio
    args.lr_scheduler = a.lr_scheduler or args.lr_scheduler
    if a.HasField("weight_decay"):
        args.weight_decay = a.weight_decay
    args.max_seq_length = a.max_seq_length or args.max_seq_length
    args.seed = a.seed or args.seed
    if a.HasField("eval_steps"):
        args.eval_steps = a.eval_steps
    if a.HasField("early_stopping_patience"):
        args.early_stopping_patience = a.early_stopping_patience
    if a.HasField("early_stopping_min_delta"):
        args.early_stopping_min_delta = a.early_stopping_min_delta
    args.checkpoint_steps = a.checkpoint_steps
    args.max_steps = a.max_steps
    if a.HasField("packing"):
        args.packing = a.packing
    if a.HasField("group_by_length"):
        args.group_by_length = a.group_by_length
    if a.HasField("max_grad_norm"):
        args.max_grad_norm = a.max_grad_norm
    r = request.resources
    resources.num_workers = r.num_workers or resources.num_workers
    resources.cpus_per_worker = r.cpus_per_worker or resources.cpus_per_worker
    resources.gpus_per_worker = r.gpus_per_worker or resources.gpus_per_worker
    spec.metadata = dict(request.metadata)
    spec.use_unsloth = request.use_unsloth
    spec.load_in_4bit = request.load_in_4bit
    spec.merge_and_export = request.merge_and_export
    return spec


class TrainingServicer(JobServicer, training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, service: TrainingService):
        self.service = service
        self.job_directory = service.job_directory

    def StartTraining(self, request, context):  # noqa: ANN001, ANN201, N802
        record = self.service.start(spec_from_proto(request, self.service))
        return training_pb2.StartTrainingResponse(job=job_to_proto(record))

    def ResumeJob(self, request, context):  # noqa: ANN001, ANN201, N802
        return jobs_pb2.ResumeJobResponse(job=job_to_proto(self.service.resume(request.job_id)))


def register(server: grpc.Server, runtime: Runtime) -> str:
    service = TrainingService(runtime.settings, runtime.store)
    runtime.on_shutdown(service.shutdown)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(service), server)
    return training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
