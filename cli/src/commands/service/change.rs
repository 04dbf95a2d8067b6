//! The commands that change services: `create`, `update`, `scale`,
//! `rollback` and `rm`; the first four then wait for the change to
//! converge (`watch.rs`) unless `--detach`.
//!
//! Owns: the order of calls, the retry of a write that lost a version
//! race, and what each command prints. Does not own: building the spec
//! (`spec.rs`) or deciding convergence (`progress.rs`).

use anyhow::{Context, Result, bail};
use rswarm_proto::service_spec::Mode;
use rswarm_proto::*;
use tonic::Code;

use crate::client::Daemon;

use super::calls::{self, explain_service_error};
use super::progress::Purpose;
use super::spec::{self, CreateFlags, UpdateFlags, WaitFlags};
use super::text::{service_id, service_name};
use super::watch::{self, WaitTarget};

/// Read-modify-write attempts when another client changed the service in
/// between (the write carries the version read): a few, since each lost
/// race means someone else's write went through.
const UPDATE_ATTEMPTS_MAX: u32 = 5;

/// Services one `scale` may name: each is a read and a write, then a wait.
const SCALE_TARGETS_MAX: usize = 100;

/// `service create` flags.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    spec: CreateFlags,
    #[command(flatten)]
    wait: WaitFlags,
}

/// `service update` flags.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    flags: UpdateFlags,
    #[command(flatten)]
    wait: WaitFlags,
    /// The service: name, ID or ID prefix.
    #[arg(value_name = "SERVICE")]
    service: String,
}

/// `service scale` flags.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    wait: WaitFlags,
    /// SERVICE=REPLICAS pairs, e.g. web=3 api=5.
    #[arg(required = true, value_name = "SERVICE=REPLICAS", value_parser = scale_target)]
    targets: Vec<ScaleTarget>,
}

/// `service rollback` flags.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    wait: WaitFlags,
    /// The service: name, ID or ID prefix.
    #[arg(value_name = "SERVICE")]
    service: String,
}

/// `service rm` arguments.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Services: names, IDs or ID prefixes.
    #[arg(required = true, value_name = "SERVICE")]
    services: Vec<String>,
}

/// One `SERVICE=REPLICAS` of `scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTarget {
    service: String,
    replicas: u64,
}

fn scale_target(raw: &str) -> Result<ScaleTarget, String> {
    let Some((service, replicas)) = raw.split_once('=') else {
        return Err(format!(
            "invalid scale specifier {raw:?}: use SERVICE=REPLICAS, e.g. web=3"
        ));
    };
    if service.is_empty() {
        return Err(format!(
            "invalid scale specifier {raw:?}: name the service, e.g. web=3"
        ));
    }
    let replicas = super::values::replicas(replicas)?;
    Ok(ScaleTarget {
        service: service.to_string(),
        replicas,
    })
}

/// `service create`: prints the new service's ID, then waits.
pub async fn create(d: &Daemon, args: CreateArgs) -> Result<u8> {
    let spec = spec::create_spec(&args.spec)?;
    let response = d
        .control()
        .create_service(CreateServiceRequest {
            registry_auth: args.spec.files.auth.registry_auth(&spec)?,
            spec: Some(spec),
            no_resolve_image: args.spec.resolve.no_resolve_image,
        })
        .await
        .map_err(|s| d.explain(s))?
        .into_inner();
    super::image_resolve::print_warnings(&response.warnings);
    let service = response
        .service
        .context("the manager answered without the service")?;
    println!("{}", service_id(&service));
    let name = match service_name(&service) {
        "" => service_id(&service),
        name => name,
    };
    let target = wait_target(&service, name, Purpose::Create);
    Ok(watch::wait(d, &target, args.wait).await?.exit_code)
}

/// `service update`: prints the service as named, then waits.
pub async fn update(d: &Daemon, args: UpdateArgs) -> Result<u8> {
    let flags = &args.flags;
    let service = update_with_retry(d, &args.service, |s| flags.request(s)).await?;
    println!("{}", args.service);
    let purpose = if flags.rollback {
        Purpose::Rollback
    } else {
        Purpose::Update
    };
    let target = wait_target(&service, &args.service, purpose);
    Ok(watch::wait(d, &target, args.wait).await?.exit_code)
}

/// `service rollback`: back to the spec before the last update, then waits.
pub async fn rollback(d: &Daemon, args: RollbackArgs) -> Result<u8> {
    let service = update_with_retry(d, &args.service, rollback_request).await?;
    println!("{}", args.service);
    let target = wait_target(&service, &args.service, Purpose::Rollback);
    Ok(watch::wait(d, &target, args.wait).await?.exit_code)
}

fn rollback_request(service: &Service) -> Result<UpdateServiceRequest> {
    let meta = service.meta.clone().unwrap_or_default();
    Ok(UpdateServiceRequest {
        service_id: meta.id,
        version: meta.version,
        spec: None,
        rollback: true,
        ..UpdateServiceRequest::default()
    })
}

/// The request that sets a service's replica count.
pub fn scale_request(service: &Service, replicas: u64) -> Result<UpdateServiceRequest> {
    let meta = service.meta.clone().unwrap_or_default();
    let mut spec = service.spec.clone().unwrap_or_default();
    if matches!(spec.mode, Some(Mode::Global(_))) {
        bail!(
            "{}: scale can only be used with replicated mode",
            service_name(service)
        );
    }
    spec::set_replicas(&mut spec, replicas)?;
    Ok(UpdateServiceRequest {
        service_id: meta.id,
        version: meta.version,
        spec: Some(spec),
        ..UpdateServiceRequest::default()
    })
}

/// `service scale`: sets every count first (`web scaled to 3`), then waits
/// for each. A service that cannot be scaled is reported and the others go
/// on; the exit code is the worst of all.
pub async fn scale(d: &Daemon, args: ScaleArgs) -> Result<u8> {
    if args.targets.len() > SCALE_TARGETS_MAX {
        bail!(
            "too many services to scale at once ({}): scale at most {SCALE_TARGETS_MAX} per command",
            args.targets.len()
        );
    }
    let mut scaled = Vec::new();
    let mut code = 0;
    for target in &args.targets {
        let result =
            update_with_retry(d, &target.service, |s| scale_request(s, target.replicas)).await;
        match result {
            Ok(service) => {
                println!("{} scaled to {}", target.service, target.replicas);
                scaled.push(wait_target(&service, &target.service, Purpose::Update));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                code = 1;
            }
        }
    }
    for target in &scaled {
        let waited = watch::wait(d, target, args.wait).await?;
        code = code.max(waited.exit_code);
        if waited.interrupted {
            break;
        }
    }
    Ok(code)
}

/// `service rm`: removes each service, printing its name; the ones that
/// fail are reported after the others were tried.
pub async fn rm(d: &Daemon, args: RmArgs) -> Result<u8> {
    let mut errors = Vec::new();
    for reference in &args.services {
        let request = RemoveServiceRequest {
            reference: reference.clone(),
        };
        match d.control().remove_service(request).await {
            Ok(_) => println!("{reference}"),
            Err(s) => {
                let message = format!("{:#}", explain_service_error(d, reference, s));
                // One unreachable daemon should not print the same line per service.
                if !errors.contains(&message) {
                    errors.push(message);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(0)
    } else {
        bail!("{}", errors.join("\n"))
    }
}

/// Reads the service, builds the request from what was read, and writes
/// it; when another client wrote in between (a version conflict), reads
/// again and rebuilds, up to `UPDATE_ATTEMPTS_MAX` times.
async fn update_with_retry(
    d: &Daemon,
    reference: &str,
    build: impl Fn(&Service) -> Result<UpdateServiceRequest>,
) -> Result<Service> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let view = calls::get_service(d, reference).await?;
        let request = build(calls::service_of(&view)?)?;
        match d.control().update_service(request).await {
            Ok(response) => {
                let response = response.into_inner();
                super::image_resolve::print_warnings(&response.warnings);
                return response
                    .service
                    .context("the manager answered without the service");
            }
            Err(s) if s.code() == Code::Aborted && attempt < UPDATE_ATTEMPTS_MAX => continue,
            Err(s) => return Err(explain_service_error(d, reference, s)),
        }
    }
}

fn wait_target(service: &Service, name: &str, purpose: Purpose) -> WaitTarget {
    WaitTarget {
        service_id: service_id(service).to_string(),
        name: name.to_string(),
        purpose,
        baseline: service.update_status.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::fixtures::{global, replicated};

    #[test]
    fn scale_targets_are_service_equals_count() {
        assert_eq!(
            scale_target("web=3"),
            Ok(ScaleTarget {
                service: "web".into(),
                replicas: 3
            })
        );
        assert_eq!(
            scale_target("web"),
            Err("invalid scale specifier \"web\": use SERVICE=REPLICAS, e.g. web=3".into())
        );
        assert!(scale_target("=3").is_err());
        assert_eq!(
            scale_target("web=-1"),
            Err("invalid replica count \"-1\": it cannot be negative".into())
        );
    }

    #[test]
    fn scale_sets_replicas_at_the_version_read_and_refuses_global() {
        let request = scale_request(&replicated("web", 2), 5).unwrap();
        assert_eq!(request.version, 10);
        assert_eq!(request.service_id, "web-id-0123456789abcdef");
        assert_eq!(
            request.spec.unwrap().mode,
            Some(Mode::Replicated(ReplicatedMode { replicas: 5 }))
        );
        let err = scale_request(&global("agent"), 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent: scale can only be used with replicated mode"
        );
    }

    #[test]
    fn rollback_asks_for_the_previous_spec_at_the_version_read() {
        let request = rollback_request(&replicated("web", 2)).unwrap();
        assert!(request.rollback);
        assert_eq!(request.spec, None);
        assert_eq!(request.version, 10);
    }
}
