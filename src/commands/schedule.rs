//! `backplan schedule systemd|cron`: units or a crontab line for the host's own
//! scheduler, from the policy's schedules.

use std::path::Path;

use super::{Exit, print, write_file};
use crate::cli::{ScheduleArgs, Scheduler};
use crate::error::{Code, Failure};
use crate::plan::due::host_schedule;
use crate::render::schedule::{self, CRONTAB, Invocation, SERVICE, TIMER};

pub fn run(path: &Path, args: &ScheduleArgs) -> miette::Result<Exit> {
    // Its warnings (a variable unset here, say) are for `validate`: the units run
    // elsewhere, and only the schedules matter here.
    let loaded = crate::policy::load_file(path)?;
    let policy_path = match &args.policy_path {
        Some(p) => p.clone(),
        None => std::path::absolute(path).map_err(|e| {
            Failure::new(
                Code::Io,
                format!("cannot make {} absolute: {e}", path.display()),
            )
        })?,
    };
    let invocation = Invocation {
        bin: &args.bin,
        policy: &policy_path,
    };
    let schedule = host_schedule(&loaded.policy, chrono::Utc::now());
    match args.scheduler {
        Scheduler::Systemd => {
            let service = schedule::service(&invocation);
            let timer = schedule::timer(&invocation, &schedule, args.jitter);
            match &args.out {
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Failure::new(Code::Io, format!("cannot create {}: {e}", dir.display()))
                    })?;
                    write_file(&dir.join(SERVICE), &service)?;
                    write_file(&dir.join(TIMER), &timer)?;
                }
                None => print(&format!("# {SERVICE}\n{service}\n# {TIMER}\n{timer}"))?,
            }
        }
        Scheduler::Cron => {
            let line = schedule::cron(&invocation, &schedule);
            match &args.out {
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Failure::new(Code::Io, format!("cannot create {}: {e}", dir.display()))
                    })?;
                    write_file(&dir.join(CRONTAB), &line)?;
                }
                None => print(&line)?,
            }
        }
    }
    Ok(Exit::Ok)
}
