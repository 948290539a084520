//! `service scale NAME=N...`: set replicas on each, then wait for each
//! unless --detach (docker/cli scale.go).

use clap::Args;

use crate::client::{CliError, Client, Result};
use crate::out;

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    detach: bool,
    #[arg(value_name = "SERVICE=REPLICAS", required = true)]
    services: Vec<String>,
}

/// Splits "name=5", rejecting anything docker rejects.
pub fn parse_scale(arg: &str) -> Result<(String, u64)> {
    let invalid = || {
        CliError::Other(format!(
            "invalid scale specifier '{arg}'.\nSee '{} service scale --help'.",
            crate::PROGRAM
        ))
    };
    let (name, count) = arg.split_once('=').ok_or_else(invalid)?;
    if name.is_empty() {
        return Err(invalid());
    }
    let count = count.parse::<u64>().map_err(|_| invalid())?;
    Ok((name.to_string(), count))
}

pub async fn run(client: &Client, args: ScaleArgs) -> Result<()> {
    let mut targets = Vec::new();
    for arg in &args.services {
        targets.push(parse_scale(arg)?);
    }
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for (name, count) in targets {
        match scale_one(client, &name, count).await {
            Ok(()) => scaled.push(name),
            Err(err) => errors.push(format!("{name}: {err}")),
        }
    }
    if !args.detach {
        for name in &scaled {
            if let Err(err) = crate::progress::wait_on_service(client, name, false).await {
                errors.push(format!("{name}: {err}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

async fn scale_one(client: &Client, name: &str, count: u64) -> Result<()> {
    let (service, _) = super::get_service(client, name, false).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    let mode = spec.mode.get_or_insert_with(Default::default);
    if let Some(replicated) = mode.replicated.as_mut() {
        replicated.replicas = Some(count as i64);
    } else if let Some(job) = mode.replicated_job.as_mut() {
        job.total_completions = Some(count as i64);
    } else {
        return Err("scale can only be used with replicated or replicated-job mode".into());
    }
    super::post_update(
        client,
        &service,
        &spec,
        false,
        super::UpdateAuth::None,
        false,
    )
    .await?;
    out(&format!("{name} scaled to {count}\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_specifiers() {
        assert_eq!(
            parse_scale("helloworld=5").unwrap(),
            ("helloworld".to_string(), 5)
        );
        assert!(parse_scale("helloworld").is_err());
        assert!(parse_scale("helloworld=-1").is_err());
        assert!(parse_scale("=3").is_err());
    }
}
