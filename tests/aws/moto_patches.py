"""Test-only fixes for moto 5.2.5's Step Functions interpreter (``execute_state_machine``).

Each patch names the moto bug it works around; none changes what a state machine means, so
what the tests assert about our definition holds on AWS too. ``apply()`` is idempotent and
called once per test session by ``tests/aws/conftest.py``. A patch whose bug is gone in a newer
moto is skipped (the bad source pattern is no longer found), and a moto version other than
the pinned one fails loudly so somebody re-checks this file when moto is upgraded.
"""

import inspect
import textwrap
import uuid
from typing import Callable

import moto

PINNED_MOTO = "5.2.5"

# Seconds that Retry blocks asked to wait (see _patch_retry_sleep): tests assert on them, and
# may register callbacks that run "during" the wait (e.g. a blocking Glue run finishing).
RETRY_SLEEPS: list[float] = []
ON_RETRY_SLEEP: list[Callable[[float], None]] = []
# Likewise for Wait states (see _patch_wait_sleep): seconds asked for, and callbacks that run
# "during" the wait (e.g. the other workbook of a pair being uploaded).
WAIT_SLEEPS: list[float] = []
ON_WAIT: list[Callable[[float], None]] = []
_APPLIED: dict[str, bool] = {}


def _patch_glue_sync_interrupt_all() -> None:
    """Bug 1: every ``glue:startJobRun.sync`` task fails with States.Runtime
    ``'NoneType' object has no attribute 'interrupt_all'``.

    ``StateTaskServiceCallback._eval_integration_pattern`` calls
    ``callback_endpoint.interrupt_all()`` in a ``finally`` block, but the endpoint only exists for
    integrations that support ``.waitForTaskToken``; Glue supports ``.sync`` only, so it is None
    and the AttributeError replaces the real outcome of the job run. Fix (as upstream did): guard
    the call with ``if callback_endpoint is not None``. We recompile moto's own method with just
    that line changed instead of copying 80 lines of it here.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as module,
    )

    cls = module.StateTaskServiceCallback
    source = textwrap.dedent(inspect.getsource(cls._eval_integration_pattern))
    bad = "        callback_endpoint.interrupt_all()\n"
    if source.count(bad) != 1:
        return  # fixed upstream (or rewritten): nothing to do
    fixed = source.replace(
        bad, "        if callback_endpoint is not None:\n            callback_endpoint.interrupt_all()\n"
    )
    namespace: dict[str, Callable] = {}
    exec(compile(fixed, module.__file__, "exec"), vars(module), namespace)  # noqa: S102 - moto's own code
    cls._eval_integration_pattern = namespace["_eval_integration_pattern"]


def _patch_map_iteration_states_errors() -> None:
    """Bug 4: a Map iteration that fails with a ``States.*`` error (``States.TaskFailed`` of a failed
    Glue run inside an inline Map) ends the Map with ``States.Runtime`` instead: the iteration worker
    wraps the error name in ``CustomErrorName``, which refuses the ``States.`` prefix (ValueError).
    AWS passes the iteration's error on. Fix: build a ``StatesErrorName`` for ``States.*`` names."""
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        iteration_worker as module,
    )

    source = textwrap.dedent(inspect.getsource(module.IterationWorker._eval_job))
    bad = "                error_name = CustomErrorName(error_name=error_name)\n"
    if source.count(bad) != 1:
        return  # fixed upstream (or rewritten): nothing to do
    fixed = source.replace(bad, (
        "                error_name = (StatesErrorName.from_name(error_name) if error_name.startswith('States.')\n"
        "                              else CustomErrorName(error_name=error_name))\n"))
    namespace: dict[str, Callable] = {}
    scope = {**vars(module), "StatesErrorName": StatesErrorName}
    exec(compile(fixed, module.__file__, "exec"), scope, namespace)  # noqa: S102 - moto's own code
    module.IterationWorker._eval_job = namespace["_eval_job"]


def _patch_output_datetimes() -> None:
    """Bug 2: ``describe_execution`` raises ``TypeError: Object of type datetime is not JSON
    serializable`` once a ``glue:startJobRun.sync`` execution succeeded.

    The execution's output is the Glue ``JobRun`` as boto3 returned it (``StartedOn``,
    ``CompletedOn``... are datetimes); moto's responses.py serialises it with a plain
    ``json.dumps``. Fix: store the output already encoded with the parser's own
    ``to_json_str`` (ISO dates), exactly what the parser backend's describe output does.
    """
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
    from moto.stepfunctions.parser.backend import execution as module

    comm = module.BaseExecutionWorkerCommunication
    original = comm._reflect_execution_status

    def _reflect_execution_status(self):  # type: ignore[no-untyped-def]
        original(self)
        output = self.execution.output
        if output is not None and not isinstance(output, str):
            self.execution.output = to_json_str(output, separators=(",", ":"))

    comm._reflect_execution_status = _reflect_execution_status


def _patch_unnamed_execution_arn() -> None:
    """Bug 3: ``start_execution`` without ``name`` yields an execution ARN ending in ``:None``
    (moto formats the ARN with the missing name), so a second unnamed execution collides.
    AWS generates a UUID name. Our Lambda always names executions, but other tests may not."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.start_execution

    def start_execution(self, state_machine_arn, name=None, execution_input=None, trace_header=None):  # type: ignore[no-untyped-def]
        return original(self, state_machine_arn, name or str(uuid.uuid4()), execution_input, trace_header)

    StepFunctionsParserBackend.start_execution = start_execution


def _patch_synchronous_executions() -> None:
    """Not a bug, a test convenience: moto runs each execution in a background thread, so a test
    would have to poll ``describe_execution`` with sleeps. moto already has the synchronous worker
    it uses for ``StartSyncExecution`` (``SyncExecutionWorker.start`` runs the same
    ``_execution_logic`` inline); use it for ``StartExecution`` too, so an execution has finished
    when ``start_execution`` returns and no thread outlives its test's ``mock_aws``.
    Side effect to know: a redelivered S3 event therefore always meets a *closed* execution
    (``ExecutionAlreadyExists``), never a running one with the same name (which AWS answers
    with the existing execution); the Lambda treats both as "not started twice".
    """
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker, SyncExecutionWorker

    ExecutionWorker.start = SyncExecutionWorker.start


def _patch_retry_sleep() -> None:
    """Not a bug, a test convenience: a ``Retry`` block really sleeps ``IntervalSeconds`` (x
    ``BackoffRate``) in moto. Record the requested wait in ``RETRY_SLEEPS`` instead of sleeping,
    so retry tests take milliseconds and can still assert the back-off."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class _RecordingTime:
        @staticmethod
        def sleep(seconds: float) -> None:
            RETRY_SLEEPS.append(float(seconds))
            for callback in list(ON_RETRY_SLEEP):
                callback(float(seconds))

        def __getattr__(self, name: str):  # anything else: the real time module
            import time

            return getattr(time, name)

    retrier_decl.time = _RecordingTime()


def _patch_wait_sleep() -> None:
    """Not a bug, a test convenience: a ``Wait`` state really waits its seconds in moto. Record
    the requested wait in ``WAIT_SLEEPS`` and run the ``ON_WAIT`` callbacks instead of waiting,
    so the partner wait costs no time and a test can upload "during" it."""
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function

    def _wait_interval(self, env, wait_seconds):  # type: ignore[no-untyped-def]
        WAIT_SLEEPS.append(float(wait_seconds))
        for callback in list(ON_WAIT):
            callback(float(wait_seconds))

    wait_function.WaitFunction._wait_interval = _wait_interval


def apply() -> None:
    """Apply every patch once (per process)."""
    if _APPLIED:
        return
    if moto.__version__ != PINNED_MOTO:
        raise RuntimeError(
            f"tests/aws/moto_patches.py was written for moto {PINNED_MOTO}, found {moto.__version__}: "
            "re-check each workaround against the new moto and update PINNED_MOTO"
        )
    for patch in (
        _patch_glue_sync_interrupt_all,
        _patch_output_datetimes,
        _patch_unnamed_execution_arn,
        _patch_synchronous_executions,
        _patch_retry_sleep,
        _patch_wait_sleep,
        _patch_map_iteration_states_errors,
    ):
        patch()
        _APPLIED[patch.__name__] = True
