//! A task's life after creation: a timeline of phases derived from its fate, walked by one
//! background task per task. Each status change is applied under the state lock together with the
//! decision to call back, so what queries show and what callbacks say never disagree.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::callbacks::{self, Callback};
use super::fate::{DUPLICATE_CALLBACKS, Fate, Outcome};
use super::state::{Phase, Provider, Sim, State, StatusChange, now_ms};
use super::{kie, kling};

/// Starts walking the timeline of a task that was just inserted.
pub(crate) fn start(sim: &Sim, task_id: &str, fate: &Fate) {
    let recovery = Duration::from_millis(sim.config().recovery_delay_ms);
    let steps = timeline(fate, recovery);
    let (deliveries, deliverer) = callbacks::deliverer(sim.clone());
    sim.spawn(deliverer);
    sim.spawn(run(sim.clone(), task_id.to_owned(), steps, deliveries));
}

/// Ends a task now, as its provider would: `succeed` or `fail` (other outcomes are refused), with
/// the callback its provider sends for that. Meant for `[[sim:never]]` tasks, whose own timeline
/// never ends them; a task still walking its timeline may move on afterwards. `false`: no such
/// task.
pub(crate) fn finish(sim: &Sim, task_id: &str, outcome: Outcome) -> bool {
    let phase = match outcome {
        Outcome::Succeed => Phase::Succeeded,
        Outcome::Fail => Phase::Failed,
        Outcome::FailThenSucceed | Outcome::Never => return false,
    };
    let base_url = sim.base_url().to_owned();
    let step = sim.with(|state| {
        // Its own timeline stops here: a step still due must not undo the ending.
        if let Some(task) = state.tasks.get_mut(task_id) {
            task.finished_by_hand = true;
        }
        advance(state, task_id, phase, &base_url)
    });
    match step {
        Step::TaskGone => false,
        Step::Quiet => true,
        Step::CallBack(callback) => {
            let (deliveries, deliverer) = callbacks::deliverer(sim.clone());
            sim.spawn(deliverer);
            let _ = deliveries.send(callback);
            true
        }
    }
}

/// When each phase begins, counted from creation. The whole life takes the fate's duration;
/// `fail-then-success` adds `recovery` after the failure, `never` stops before the end.
fn timeline(fate: &Fate, recovery: Duration) -> Vec<(Duration, Phase)> {
    let total = Duration::from_millis(fate.duration_ms);
    let at = |fraction: f64| total.mul_f64(fraction);
    let mut steps = vec![
        (Duration::ZERO, Phase::Waiting),
        (at(0.15), Phase::Queued),
        (at(0.3), Phase::Running { progress: 10 }),
    ];
    if fate.unknown_status {
        // Half the life, so that a poller cannot miss it.
        steps.push((at(0.5), Phase::Unknown));
    } else {
        steps.push((at(0.5), Phase::Running { progress: 50 }));
        steps.push((at(0.75), Phase::Running { progress: 90 }));
    }
    match fate.outcome {
        Outcome::Succeed => steps.push((total, Phase::Succeeded)),
        Outcome::Fail => steps.push((total, Phase::Failed)),
        Outcome::FailThenSucceed => {
            steps.push((total, Phase::Failed));
            steps.push((total + recovery, Phase::Succeeded));
        }
        Outcome::Never => {}
    }
    steps
}

async fn run(
    sim: Sim,
    task_id: String,
    steps: Vec<(Duration, Phase)>,
    deliveries: UnboundedSender<Callback>,
) {
    let start = tokio::time::Instant::now();
    for (offset, phase) in steps {
        tokio::time::sleep_until(start + offset).await;
        let base_url = sim.base_url().to_owned();
        let step = sim.with(|state| match state.tasks.get(&task_id) {
            Some(task) if task.finished_by_hand => Step::TaskGone,
            _ => advance(state, &task_id, phase, &base_url),
        });
        match step {
            Step::TaskGone => return,
            Step::Quiet => {}
            Step::CallBack(callback) => {
                // The deliverer outlives this loop (it drains the channel), so sending cannot fail
                // unless the simulator is shutting down.
                let _ = deliveries.send(callback);
            }
        }
    }
}

enum Step {
    TaskGone,
    Quiet,
    CallBack(Callback),
}

/// Moves a task to `phase` and decides whether that is a status change worth a callback: Kling
/// calls back on every change of its status, kie only at the end.
fn advance(state: &mut State, task_id: &str, phase: Phase, base_url: &str) -> Step {
    let config = &state.config;
    let Some(task) = state.tasks.get_mut(task_id) else { return Step::TaskGone };
    let now = now_ms();
    let previous = task.history.last().map(|change| change.status.clone());
    task.phase = phase;
    task.updated_at_ms = now;
    let status = task.status();
    if previous.as_deref() == Some(status) {
        return Step::Quiet; // e.g. kie's progress rising, or Kling's `submitted` staying put
    }
    if phase.is_terminal() {
        task.completed_at_ms = Some(now);
    }
    task.history.push(StatusChange { status: status.to_owned(), at_ms: now });
    tracing::debug!(task_id, status, "status change");

    let Some(url) = task.callback_url.clone().filter(|_| task.fate.callbacks) else {
        return Step::Quiet;
    };
    let (body, hmac_key) = match task.provider {
        Provider::Kling => {
            (kling::callback_body(task, base_url, config.kling_callback_envelope), None)
        }
        Provider::Kie if phase.is_terminal() => {
            (kie::callback_body(task, base_url), config.kie_webhook_hmac_key.clone())
        }
        Provider::Kie => return Step::Quiet,
    };
    let copies =
        if task.fate.dup_callback && phase.is_terminal() { DUPLICATE_CALLBACKS } else { 1 };
    task.callbacks_queued += copies;
    Step::CallBack(Callback {
        task_id: task_id.to_owned(),
        url,
        status: status.to_owned(),
        body,
        copies,
        hmac_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;
    use crate::fate::Directives;

    fn phases(prompt: &str) -> Vec<Phase> {
        let fate = Fate::decide(&Directives::parse(prompt), &SimConfig::default(), "k");
        timeline(&fate, Duration::from_millis(100)).into_iter().map(|(_, phase)| phase).collect()
    }

    #[test]
    fn each_outcome_ends_where_it_should() {
        assert_eq!(phases("").last(), Some(&Phase::Succeeded));
        assert_eq!(phases("[[sim:fail]]").last(), Some(&Phase::Failed));
        assert!(phases("[[sim:never]]").iter().all(|phase| !phase.is_terminal()));
        let recovering = phases("[[sim:fail-then-success]]");
        assert_eq!(recovering[recovering.len() - 2..], [Phase::Failed, Phase::Succeeded]);
        assert!(phases("[[sim:unknown-status]]").contains(&Phase::Unknown));
    }

    #[test]
    fn the_timeline_is_ordered_and_takes_the_fates_duration() {
        let fate =
            Fate::decide(&Directives::parse("[[sim:delay=400]]"), &SimConfig::default(), "k");
        let steps = timeline(&fate, Duration::ZERO);
        assert!(steps.windows(2).all(|pair| pair[0].0 <= pair[1].0));
        assert_eq!(steps.last().map(|step| step.0), Some(Duration::from_millis(400)));
    }
}
