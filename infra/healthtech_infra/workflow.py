"""The ETL state machine's states (docs/aws.md "Flow"): look at the export folder, wait for a missing
partner once, claim and load the pair with Glue, release the claim of a failed run, link the report.

Plain Wait/Task/Choice/Pass/Retry/Catch/Fail/Succeed with JSONPath only: moto runs the same ASL
(infra/asl/etl_state_machine.asl.json) in tests/aws. ``glue_job_task`` is reusable by other state
machines (the backfill): it reads everything from one JSONPath object, the resolver's output.
"""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import REPORT_PREFIX
from .sfn_parts import GLUE_BUSY_ERRORS, GLUE_TRANSIENT_ERRORS, Retry, glue_run_task, notify_state

STATE_RESOLVE = "ResolveInputs"
STATE_CHOOSE = "RunOrWait"
STATE_WAIT = "WaitForPartner"
STATE_RECHECK = "RecheckInputs"
STATE_INCOMPLETE = "ExportIncomplete"
STATE_SKIPPED = "NothingToLoad"
STATE_RUN_JOB = "RunGlueEtlJob"
STATE_REPORT = "LinkReport"
STATE_RELEASE = "ReleaseClaim"
STATE_RESOLVE_FAILED = "ResolveInputsFailed"
STATE_RECHECK_FAILED = "RecheckInputsFailed"
STATE_JOB_FAILED = "GlueJobFailed"
STATE_NOTIFY = "NotifyFailure"
STATE_FAILED = "EtlFailed"
STATE_SUCCEEDED = "EtlSucceeded"

# The resolver's output (at $.inputs here) -> the Glue job run's arguments.
RUN_ARGUMENTS = {
    "--RAW_BUCKET": "bucket",
    "--DOCTORS_KEY": "doctors_key",
    "--APPOINTMENTS_KEY": "appointments_key",
    "--DOCTORS_VERSION": "doctors_version",
    "--APPOINTMENTS_VERSION": "appointments_version",
    "--source": "source",
    "--export": "export",
    "--export_date": "export_date",
    "--RESULT_KEY": "result_key",
}
# With job run queuing a busy job queues the run (WAITING) instead of refusing it; the retry stays
# for the account-level limits. Full jitter spreads a burst of refused starts (1,000 uploads).
BUSY_RETRY = Retry(GLUE_BUSY_ERRORS, interval=30, backoff_rate=2, max_attempts=8, max_delay=600)
# Errors of the StartJobRun call (not of the job run: a failed run is States.TaskFailed).
TRANSIENT_RETRY = Retry(GLUE_TRANSIENT_ERRORS, interval=15, backoff_rate=2, max_attempts=4)


def glue_job_task(scope: Construct, construct_id: str, *, job_name: str, inputs_path: str = "$.inputs",
                  result_path: str = "$.glue") -> sfn.CustomState:
    """glue:startJobRun.sync of the pinned pair at ``inputs_path`` (the resolver's output: ``bucket``,
    ``source``, ``export``, ``export_date``, ``doctors_key``/``_version``, ``appointments_key``/``_version``,
    ``result_key``, ``max_capacity``), queued when the job is busy, busy/transient errors retried with
    full jitter (sfn_parts.glue_run_task)."""
    return glue_run_task(
        scope,
        construct_id,
        job_name=job_name,
        comment="Run the Glue ETL job on the pinned pair and wait for it to finish",
        max_capacity_path=f"{inputs_path}.max_capacity",
        arguments={f"{arg}.$": f"{inputs_path}.{field}" for arg, field in RUN_ARGUMENTS.items()},
        result_path=result_path,
        retries=[BUSY_RETRY, TRANSIENT_RETRY],
    )


def build_definition(
    scope: Construct,
    *,
    job_name: str,
    topic: sns.ITopic,
    resolver: lambda_.IFunction,
    report_bucket_name: str,
) -> sfn.IChainable:
    """Resolve -> run | wait once for the partner -> recheck -> run | missing; failures alert."""
    resolve = _resolver_task(scope, STATE_RESOLVE, resolver, "Find both workbooks of the export folder, "
                             "claim that pair once, pick the capacity", {"action": "resolve", "final": False})
    recheck = _resolver_task(scope, STATE_RECHECK, resolver, "Look once more after the wait; still alone: "
                             "publish ExportsMissingPartner", {"action": "resolve", "final": True})
    run_job = glue_job_task(scope, STATE_RUN_JOB, job_name=job_name)
    link = _link_report_state(scope, resolver)
    release = _release_state(scope, resolver)
    alert = _notify_state(scope, topic, report_bucket_name).next(
        sfn.Fail(scope, STATE_FAILED, state_name=STATE_FAILED, error="EtlJobFailed",
                 cause="The ETL run failed; the alert topic has the details"))
    for state, name, pass_id in ((resolve, STATE_RESOLVE, STATE_RESOLVE_FAILED),
                                 (recheck, STATE_RECHECK, STATE_RECHECK_FAILED)):
        state.add_catch(_remember(scope, pass_id, name).next(alert), errors=["States.ALL"], result_path="$.error")
    job_failed = _remember(scope, STATE_JOB_FAILED, STATE_RUN_JOB).next(alert)
    # A failed run gives its pair back (a re-run can claim it); a failed release still alerts.
    release.add_catch(job_failed, errors=["States.ALL"], result_path="$.release_error")
    run_job.add_catch(release.next(job_failed), errors=["States.ALL"], result_path="$.error")
    succeeded = sfn.Succeed(scope, STATE_SUCCEEDED, state_name=STATE_SUCCEEDED,
                            comment="Loaded: the output's report has the run id and the HTML report's links")
    link.add_catch(succeeded, errors=["States.ALL"], result_path="$.report_error")  # loaded all the same
    choose = (
        sfn.Choice(scope, STATE_CHOOSE, state_name=STATE_CHOOSE)
        .when(sfn.Condition.string_equals("$.inputs.action", "run"), run_job.next(link).next(succeeded))
        .when(sfn.Condition.string_equals("$.inputs.action", "wait"),
              sfn.Wait(scope, STATE_WAIT, state_name=STATE_WAIT,
                       comment="The partner's own upload loads the pair; this only checks it came",
                       time=sfn.WaitTime.seconds_path("$.partner_wait_seconds")).next(recheck))
        .when(sfn.Condition.string_equals("$.inputs.action", "missing"),
              sfn.Fail(scope, STATE_INCOMPLETE, state_name=STATE_INCOMPLETE, error="ExportMissingPartner",
                       cause="One workbook of the export folder never got its partner (metric ExportsMissingPartner)"))
        .otherwise(sfn.Succeed(scope, STATE_SKIPPED, state_name=STATE_SKIPPED,
                               comment="Another execution claimed (and loads) this pair"))
    )
    recheck.next(choose)
    return resolve.next(choose)


def _remember(scope: Construct, pass_id: str, failed_state: str) -> sfn.Pass:
    """Name the failing state for the alert ($$.State.Name would be NotifyFailure's own)."""
    return sfn.Pass(scope, pass_id, state_name=pass_id, result=sfn.Result.from_string(failed_state),
                    result_path="$.failed_state")


def _resolver_task(scope: Construct, name: str, resolver: lambda_.IFunction, comment: str,
                   fields: dict) -> tasks.LambdaInvoke:
    return tasks.LambdaInvoke(
        scope,
        name,
        state_name=name,
        comment=comment,
        lambda_function=resolver,
        payload=sfn.TaskInput.from_object(
            {**fields, "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
             "input": sfn.JsonPath.object_at("$")}
        ),
        payload_response_only=True,
        retry_on_service_exceptions=True,
        result_path="$.inputs",
    )


def _release_state(scope: Construct, resolver: lambda_.IFunction) -> tasks.LambdaInvoke:
    return _pair_action(scope, STATE_RELEASE, resolver, "The run failed: give its pair back so that a re-run "
                         "can claim it", action="release", field="claim_key", result_path="$.release")


def _link_report_state(scope: Construct, resolver: lambda_.IFunction) -> tasks.LambdaInvoke:
    return _pair_action(scope, STATE_REPORT, resolver, "The run id and the links to its HTML report, for the "
                         "execution output", action="report", field="result_key", result_path="$.report")


def _pair_action(scope: Construct, name: str, resolver: lambda_.IFunction, comment: str, *, action: str,
                  field: str, result_path: str) -> tasks.LambdaInvoke:
    """The resolver's ``action`` on the loaded (or failed) pair, given its ``field`` of $.inputs."""
    return tasks.LambdaInvoke(
        scope,
        name,
        state_name=name,
        comment=comment,
        lambda_function=resolver,
        payload=sfn.TaskInput.from_object({
            "action": action,
            field: sfn.JsonPath.string_at(f"$.inputs.{field}"),
            "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
        }),
        payload_response_only=True,
        retry_on_service_exceptions=True,
        result_path=result_path,
    )


def _notify_state(scope: Construct, topic: sns.ITopic, report_bucket_name: str) -> tasks.SnsPublish:
    return notify_state(
        scope,
        STATE_NOTIFY,
        topic=topic,
        comment="Alert the on-call address: which run, which state, which error, where the reports are",
        summary="HealthTech ETL run failed",
        details={
            "failed_state": sfn.JsonPath.string_at("$.failed_state"),
            "error": sfn.JsonPath.string_at("$.error.Error"),
            "cause": sfn.JsonPath.string_at("$.error.Cause"),
            "input": {
                "bucket": sfn.JsonPath.string_at("$.bucket"),
                "source": sfn.JsonPath.string_at("$.source"),
                "export": sfn.JsonPath.string_at("$.export"),
                "folder": sfn.JsonPath.string_at("$.folder"),
                "trigger_key": sfn.JsonPath.string_at("$.trigger_key"),
            },
            # The job writes each run's report (also of a failed load) under <source>/<export>/<run_id>/.
            "reports": f"s3://{report_bucket_name}/{REPORT_PREFIX}/",
            "rerun": sfn.JsonPath.format("make rerun EXECUTION={}", sfn.JsonPath.string_at("$$.Execution.Id")),
        },
    )
