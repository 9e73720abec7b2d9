//! What dockerd refuses at create (and `update`) time, refused here with
//! its messages, so that nothing Docker-invalid reaches a start (where it
//! would be a 500): resource limits, restart policies, log drivers.

use super::{HostConfig, RestartPolicy};
use crate::{Error, Result};

/// dockerd's `linuxMinMemory`: 6 MiB.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The log drivers the engine implements: every one keeps the json log the
/// engine serves `logs` from (see docs/compat.md).
pub(super) const LOG_DRIVERS: [&str; 3] = ["json-file", "local", "none"];

/// dockerd's other built-in log drivers: known names the engine does not
/// ship (a different refusal from an unknown name).
const DOCKERD_LOG_DRIVERS: [&str; 9] = [
    "awslogs",
    "etwlogs",
    "fluentd",
    "gcplogs",
    "gelf",
    "journald",
    "logentries",
    "splunk",
    "syslog",
];

/// The default `HostConfig.LogConfig.Type`.
pub(super) const DEFAULT_LOG_DRIVER: &str = "json-file";

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// dockerd's `ValidateRestartPolicy`.
pub(super) fn restart_policy(policy: &RestartPolicy) -> Result<()> {
    match policy.name.as_str() {
        "always" | "unless-stopped" | "no" => {
            if policy.maximum_retry_count != 0 {
                let mut message = "invalid restart policy: maximum retry count can only be used with 'on-failure'".to_owned();
                if policy.maximum_retry_count < 0 {
                    message.push_str(" and cannot be negative");
                }
                return Err(invalid(message));
            }
            Ok(())
        }
        "on-failure" if policy.maximum_retry_count < 0 => Err(invalid(
            "invalid restart policy: maximum retry count cannot be negative",
        )),
        "on-failure" | "" => Ok(()),
        other => Err(invalid(format!(
            "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        ))),
    }
}

/// Fills in the default log driver and checks the one asked for
/// (dockerd's `mergeAndVerifyLogConfig`).
pub(super) fn log_config(host: &mut HostConfig) -> Result<()> {
    if host.log_config.kind.is_empty() {
        host.log_config.kind = DEFAULT_LOG_DRIVER.to_owned();
    }
    let kind = host.log_config.kind.as_str();
    if kind == "none" {
        return Ok(());
    }
    match host.log_config.config.get("mode").map(String::as_str) {
        None | Some("" | "blocking" | "non-blocking") => {}
        Some(mode) => {
            return Err(invalid(format!(
                "logger: logging mode not supported: {mode}"
            )));
        }
    }
    if LOG_DRIVERS.contains(&kind) {
        Ok(())
    } else if DOCKERD_LOG_DRIVERS.contains(&kind) {
        Err(invalid(format!(
            "logger: log driver '{kind}' is not supported by this engine; use one of {}",
            LOG_DRIVERS.join(", ")
        )))
    } else {
        Err(invalid(format!(
            "logger: no log driver named '{kind}' is registered"
        )))
    }
}

/// dockerd's `verifyPlatformContainerResources` for the limits the engine
/// applies. `update` relaxes the memory-swap rule as dockerd does.
pub(super) fn resources(host: &HostConfig, update: bool) -> Result<()> {
    if host.memory != 0 && host.memory < MIN_MEMORY {
        return Err(invalid("Minimum memory limit allowed is 6MB"));
    }
    if host.memory > 0 && host.memory_swap > 0 && host.memory_swap < host.memory {
        return Err(invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ));
    }
    if host.memory == 0 && host.memory_swap > 0 && !update {
        return Err(invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ));
    }
    if host.memory_reservation > 0 && host.memory_reservation < MIN_MEMORY {
        return Err(invalid("Minimum memory reservation allowed is 6MB"));
    }
    if host.memory > 0 && host.memory_reservation > 0 && host.memory < host.memory_reservation {
        return Err(invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ));
    }
    if host.nano_cpus > 0 && host.cpu_period > 0 {
        return Err(invalid(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    if host.nano_cpus > 0 && host.cpu_quota > 0 {
        return Err(invalid(
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ));
    }
    if host.nano_cpus != 0 {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let max = i64::try_from(cpus).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000;
        if host.nano_cpus < 0 || host.nano_cpus > max {
            return Err(invalid(format!(
                "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
            )));
        }
    }
    if host.cpu_period != 0 && !(1000..=1_000_000).contains(&host.cpu_period) {
        return Err(invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if host.cpu_quota > 0 && host.cpu_quota < 1000 {
        return Err(invalid(
            "CPU cfs quota can not be less than 1ms (i.e. 1000)",
        ));
    }
    if host.blkio_weight > 0 && !(10..=1000).contains(&host.blkio_weight) {
        return Err(invalid("Range of blkio weight is from 10 to 1000"));
    }
    // Negative values dockerd's types make impossible (unsigned there) or
    // its kernel interface refuses.
    for (name, value) in [
        ("Memory", host.memory),
        ("MemoryReservation", host.memory_reservation),
        ("CpuShares", host.cpu_shares),
        ("CpuPeriod", host.cpu_period),
    ] {
        if value < 0 {
            return Err(invalid(format!(
                "invalid {name} {value}: it cannot be negative"
            )));
        }
    }
    if host.memory_swap < -1 {
        return Err(invalid(format!(
            "invalid MemorySwap {}: use -1 for unlimited swap, or a positive size",
            host.memory_swap
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected an invalid-argument error, got {other:?}"),
        }
    }

    #[test]
    fn restart_policies_follow_dockerd() {
        let policy = |name: &str, count| RestartPolicy {
            name: name.into(),
            maximum_retry_count: count,
        };
        assert!(restart_policy(&policy("always", 0)).is_ok());
        assert!(restart_policy(&policy("on-failure", 3)).is_ok());
        assert_eq!(
            message(restart_policy(&policy("always", 3))),
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        );
        assert!(
            message(restart_policy(&policy("unless-stopped", -1)))
                .ends_with("and cannot be negative")
        );
        assert!(
            message(restart_policy(&policy("sometimes", 0))).contains("unknown policy 'sometimes'")
        );
    }

    #[test]
    fn log_config_defaults_and_refuses_unknown_drivers() {
        let mut host = HostConfig::default();
        log_config(&mut host).unwrap();
        assert_eq!(host.log_config.kind, "json-file");
        host.log_config.kind = "asdf".into();
        assert_eq!(
            message(log_config(&mut host)),
            "logger: no log driver named 'asdf' is registered"
        );
        host.log_config.kind = "syslog".into();
        assert!(message(log_config(&mut host)).contains("not supported"));
    }

    #[test]
    fn resources_use_dockerd_limits_and_messages() {
        let host = |f: fn(&mut HostConfig)| {
            let mut h = HostConfig::default();
            f(&mut h);
            h
        };
        assert!(resources(&host(|h| h.memory = 6 * 1024 * 1024), false).is_ok());
        assert_eq!(
            message(resources(&host(|h| h.memory = 4 * 1024 * 1024), false)),
            "Minimum memory limit allowed is 6MB"
        );
        assert!(
            message(resources(&host(|h| h.cpu_period = 999), false)).starts_with("CPU cfs period")
        );
        assert!(
            message(resources(&host(|h| h.cpu_quota = 10), false)).starts_with("CPU cfs quota")
        );
        assert!(message(resources(&host(|h| h.cpu_shares = -2), false)).contains("negative"));
        // Swap without memory is refused at create and allowed by update.
        let swap_only = host(|h| h.memory_swap = 64 * 1024 * 1024);
        assert!(resources(&swap_only, false).is_err());
        assert!(resources(&swap_only, true).is_ok());
    }
}
