"""The ``ductile`` command line.

Verbs::

    ductile start                     run the daemon (JSON logs on stdout)
    ductile run <plugin> [...]        queue one job (optionally wait for its end)
    ductile status                    daemon, queue, plugins, breakers, health checks run now
    ductile reload                    ask the running daemon to re-read its config (SIGHUP)
    ductile plugins                   what discovery found: loaded, refused (why), disabled
    ductile queue                     jobs queued or running
    ductile logs [plugin]             the most recent finished runs and their plugin log lines
    ductile reset <plugin>            close the plugin's circuit breakers
    ductile job <id>                  one job: record, transitions, runs
    ductile config check              validate the config and what it refers to
    ductile schedule [--from --to]    the schedule index: what is due in a time range
    ductile simulate [--days N ...]   what this config would do, simulated (nothing real runs)
    ductile pause <plugin>[/<id>]     hold a plugin's schedules (or one); queued jobs still run
    ductile resume <plugin>[/<id>]    lift that pause
    ductile facts <plugin>            the facts its manifest's fact_outputs recorded, newest first

Every verb takes ``--config PATH`` (default ``$DUCTILE_CONFIG``, then
``./ductile.yaml``) and ``--debug``; every verb but ``start`` takes
``--json`` and then prints exactly one JSON document on stdout.

Exit codes: 0 ok; 1 a runtime error or a negative answer (``status``: not
everything is healthy; ``config check``: a plugin refused or a dangling
reference; ``run --wait``: the job ended dead or the wait timed out); 2 a
usage or configuration error. Mistakes a user can make never print a
traceback: they print ``ductile: <message>`` on stderr. An unexpected error
prints ``ductile: internal error: ...`` and exits 1; the traceback follows
only with ``--debug`` or ``DUCTILE_DEBUG=1``.

With ``--json``, an error (exit 2, or a refusal such as an unknown plugin)
prints no document, only its message on stderr; a negative answer
(``status``, ``config check``, ``run --wait``) prints its document and exits 1.

Read commands never create the state directory or the database: when there
is none yet they print empty results and a note on stderr. Notes and
warnings always go to stderr, so stdout stays parseable.

JSON shapes (times are UTC ISO-8601 strings ending in ``Z`` with
milliseconds, durations are seconds as numbers; absent values are ``null``):

- job: ``id, plugin, command, payload, status, attempt, max_attempts,
  submitted_by, dedupe_key, created_at, started_at, completed_at,
  next_retry_at, last_error, parent_job_id, source_event_id``
- transition: ``at, from, to, actor, reason``
- run: ``attempt, started_at, finished_at, duration_seconds, exit_code,
  signal, timed_out, error, stderr_tail, stdout_head, stdout_json, logs``
  (``logs``: list of ``{level, message}``; ``stdout_json``: the stdout head
  parsed when it is one JSON object, else null)
- ``run``: ``{job_id, created, duplicate_of, daemon_pid, outcome}``;
  ``outcome`` (with ``--wait``, else null): ``{status, attempt, max_attempts,
  last_error, duration_seconds, elapsed_seconds}``
- ``status``: ``{healthy, problems: [str], daemon: {running, pid, state_dir}, database,
  queue: {queued, running}, plugins: [{name, state, reason, version,
  breakers: [{command, status, failures, opened_at, reopens_at}],
  health: null | {ok, error, duration_seconds, logs}}]}``; ``state`` is one
  of ``loaded, unhealthy, refused, disabled``
- ``reload``: ``{pid}``
- ``plugins``: ``{loaded: [{name, version, description, protocol, uses,
  concurrency_safe, commands, directory, paused, schedules}], refused:
  [{name, directory, reason}], disabled: [name]}``; each schedule is ``{id,
  summary, paused, every_seconds, cron, at, after_seconds, not_on,
  jitter_seconds, window: null | {start, end}, timezone, catch_up,
  if_running, command, emit}``
- ``queue``: ``{jobs: [job]}`` (running first, then queued in dispatch order)
- ``logs``: ``{runs: [{job: job, run: run}]}`` (newest first)
- ``reset``: ``{plugin, reset: [{command, status, failures, opened_at}]}``
- ``job``: ``{job, transitions: [transition], runs: [run]}``
- ``config check``: ``{ok, config, state_dir, plugins_dir, plugins: {loaded,
  refused, disabled}, routes: [{from, event_type, to, command, problem}],
  webhooks: null | {listen, endpoints: [{path, plugin, event_type,
  problem}]}, schedules: [{plugin, schedule, summary, problem}], problems: [str]}``
- ``schedule``: ``{from, to, runs: [{plugin, schedule, kind, paused, planned_at,
  planned_local, nominal_at, nominal_local, offset_seconds, snapped,
  timezone, target}], done: [{plugin, schedule, nominal_at, nominal_local}]}``;
  ``kind`` is ``planned`` (stored by the daemon),
  ``not_yet_planned`` (no stored plan: computed from now, jitter at its
  centre), ``overdue`` (stored, in the past: the daemon is down or behind)
  or ``projected`` (a later run; jitter is drawn only when a run is
  planned, so it is shown at its centre)
- ``pause``, ``resume``: ``{plugin, schedule, changed, paused: [str]}``;
  ``facts``: ``{plugin, facts: [{seq, fact_type, job_id, at, body}]}``

docs/cli.md is the reference (a test holds it to the parser and these shapes).

The package, one module per idea: :mod:`~ductile.app.cli.main` (``main()``:
errors to exit codes, the verb modules loaded when their verb runs),
:mod:`~ductile.app.cli.context` (what a verb touches outside its arguments,
the exit codes, the steps every verb shares), :mod:`~ductile.app.cli.parser`,
:mod:`~ductile.app.cli.format` and :mod:`~ductile.app.cli.jsondoc` (shared
formatting), then one module per verb group: ``daemon`` (start, reload),
``run``, ``status``, ``inspect`` (plugins, queue, logs, reset, job),
``config`` (config check), ``schedule``, ``control`` (pause, resume),
``facts``, and ``simulate`` with its report (``simulate_report``,
``simulate_text``).

Performance: ``main``, ``context`` and ``parser`` import only the standard
library's argparse, os and sys at import time; a verb's module (and with it
YAML, SQLite, asyncio, the engine) is imported only when that verb runs, so
``ductile --help`` stays fast.
"""

from ductile.app.cli.main import console, main

__all__ = ["console", "main"]
