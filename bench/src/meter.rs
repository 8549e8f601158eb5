//! The [`Meter`]: one scenario run at a time, raw runs paired with the runs compared with
//! them, and what each run cost, read from /proc around it.

use std::time::Duration;

use anyhow::Context;

use crate::Args;
use crate::broker::Broker;
use crate::load::Plan;
use crate::procfs::{self, MachineTicks, RssSampler};
use crate::report::{Run, Usage, median};
use crate::scenarios::{self, Endpoints, Scenario};
use crate::schedule_table::ScheduleTable;

/// How long each scenario of the warm-up runs.
const WARM_UP: Duration = Duration::from_secs(1);

/// Runs scenarios and measures around them: CPU of the gateway, the broker and the bench,
/// the gateway's resident set, and the events that reached the queues (or the schedule).
pub struct Meter<'a> {
    pids: Pids,
    broker_pid: Option<u32>,
    ticks_per_sec: f64,
    broker: &'a Broker,
    endpoints: &'a Endpoints,
    /// The gateway's schedule, when `scheduled` runs.
    schedule: Option<&'a ScheduleTable>,
}

/// The gateways: the plain one, and the one exporting spans when `traced` runs.
#[derive(Clone, Copy)]
pub struct Pids {
    pub gateway: u32,
    pub traced: Option<u32>,
}

/// CPU ticks of the gateway, the broker (if found) and the bench itself.
struct CpuTicks {
    gateway: u64,
    broker: Option<u64>,
    bench: u64,
    machine: MachineTicks,
}

impl<'a> Meter<'a> {
    pub fn new(
        pids: Pids,
        amqp_port: u16,
        broker: &'a Broker,
        endpoints: &'a Endpoints,
        schedule: Option<&'a ScheduleTable>,
    ) -> anyhow::Result<Self> {
        Ok(Meter {
            pids,
            broker_pid: procfs::find_listener(amqp_port),
            ticks_per_sec: procfs::ticks_per_second()? as f64,
            broker,
            endpoints,
            schedule,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        self.endpoints
    }

    pub fn broker(&self) -> &Broker {
        self.broker
    }

    pub fn pids(&self) -> Pids {
        self.pids
    }

    /// The gateway `scenario` sends to.
    fn gateway_pid(&self, scenario: Scenario) -> anyhow::Result<u32> {
        match scenario {
            Scenario::Traced => self.pids.traced.context("no traced gateway"),
            _ => Ok(self.pids.gateway),
        }
    }

    fn cpu_ticks(&self, gateway_pid: u32) -> anyhow::Result<CpuTicks> {
        Ok(CpuTicks {
            gateway: procfs::cpu_ticks(gateway_pid)?,
            broker: self.broker_pid.and_then(|pid| procfs::cpu_ticks(pid).ok()),
            bench: procfs::cpu_ticks(std::process::id())?,
            machine: procfs::machine_ticks()?,
        })
    }

    /// Connections, channels, caches and the broker's queues get going; nothing recorded.
    pub async fn warm_up(&self, plan: &Plan) -> anyhow::Result<()> {
        let short = Plan {
            duration: WARM_UP,
            ..*plan
        };
        let traced = self.pids.traced.map(|_| Scenario::Traced);
        for scenario in [Scenario::Raw, Scenario::Single].into_iter().chain(traced) {
            scenarios::run(scenario, &short, self.endpoints, self.broker).await?;
        }
        self.broker.drain().await.map(drop)
    }

    /// Each chosen scenario but `scheduled` (a study of its own), `--runs` times, then the
    /// paced pairs if `single` was chosen.
    pub async fn compared_runs(&self, args: &Args, plan: &Plan) -> anyhow::Result<Vec<Run>> {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            for &scenario in &args.scenarios {
                let absent = scenario == Scenario::Peer && self.endpoints.peer.is_none();
                if absent || scenario == Scenario::Scheduled {
                    continue;
                }
                runs.extend(self.round(scenario, plan).await?);
            }
        }
        if args.scenarios.contains(&Scenario::Single) {
            runs.extend(self.paced_pairs(args, &runs).await?);
        }
        Ok(runs)
    }

    /// A raw run, then `scenario` compared with it; `traced` comes right after
    /// `traced-off`, both compared with the raw run.
    async fn round(&self, scenario: Scenario, plan: &Plan) -> anyhow::Result<Vec<Run>> {
        if scenario != Scenario::Traced {
            return Ok(self.pair(scenario, plan).await?.into());
        }
        let [raw, off] = self.pair(Scenario::TracedOff, plan).await?;
        let mut on = self.measure(Scenario::Traced, plan).await?;
        on.compare_with(&raw);
        Ok(vec![raw, off, on])
    }

    /// A raw run, then `scenario` compared with it.
    pub async fn pair(&self, scenario: Scenario, plan: &Plan) -> anyhow::Result<[Run; 2]> {
        let raw = self.measure(Scenario::Raw, plan).await?;
        let mut other = self.measure(scenario, plan).await?;
        other.compare_with(&raw);
        Ok([raw, other])
    }

    /// Raw and single again, both paced at half single's median full-speed rate.
    async fn paced_pairs(&self, args: &Args, runs: &[Run]) -> anyhow::Result<Vec<Run>> {
        let single = runs
            .iter()
            .filter(|run| run.scenario == Scenario::Single)
            .map(|run| run.events_per_sec);
        let rate = median(single).context("no single run to pace from")? / 2.0;
        let paced = Plan {
            concurrency: args.concurrency,
            duration: args.duration,
            rate: Some(rate.max(1.0)),
        };
        let mut pairs = Vec::new();
        for _ in 0..args.runs {
            pairs.extend(self.pair(Scenario::Single, &paced).await?);
        }
        Ok(pairs)
    }

    async fn measure(&self, scenario: Scenario, plan: &Plan) -> anyhow::Result<Run> {
        let gateway_pid = self.gateway_pid(scenario)?;
        let before = self.cpu_ticks(gateway_pid)?;
        let rss = RssSampler::start(gateway_pid);
        let totals = scenarios::run(scenario, plan, self.endpoints, self.broker)
            .await
            .with_context(|| format!("running {}", scenario.name()))?;
        let gateway_rss_peak_kib = rss.finish().await?;
        let after = self.cpu_ticks(gateway_pid)?;
        let delivered = self.delivered(scenario).await?;
        let usage = self.usage(&before, &after, gateway_rss_peak_kib);
        Ok(Run::new(scenario, plan.rate, totals, delivered, usage))
    }

    /// Where the run's events went: on the queues, or (for `scheduled`) into the schedule;
    /// emptied for the next run.
    async fn delivered(&self, scenario: Scenario) -> anyhow::Result<u64> {
        match scenario {
            Scenario::Scheduled => {
                let table = self.schedule.context("no schedule to count")?;
                table.drain().await
            }
            _ => self.broker.drain().await,
        }
    }

    /// What the run cost between two readings.
    fn usage(&self, before: &CpuTicks, after: &CpuTicks, gateway_rss_peak_kib: u64) -> Usage {
        let gateway = after.gateway.saturating_sub(before.gateway);
        let broker = before
            .broker
            .zip(after.broker)
            .map(|(b, a)| a.saturating_sub(b));
        let bench = after.bench.saturating_sub(before.bench);
        let busy = after.machine.busy.saturating_sub(before.machine.busy);
        let idle = after.machine.idle.saturating_sub(before.machine.idle);
        let all = (busy + idle).max(1) as f64;
        let rest = busy.saturating_sub(gateway + broker.unwrap_or(0) + bench);
        let seconds = |ticks: u64| ticks as f64 / self.ticks_per_sec;
        Usage {
            gateway_cpu_sec: seconds(gateway),
            broker_cpu_sec: broker.map(seconds),
            bench_cpu_sec: seconds(bench),
            gateway_rss_peak_kib,
            machine_idle_pct: idle as f64 / all * 100.0,
            rest_pct: rest as f64 / all * 100.0,
        }
    }
}
