//! One module per command group; each turns parsed arguments into calls on
//! the libraries and prints what happened.

mod ca;
mod cert;
mod demo;
mod drill;
mod gateway;
mod status;
mod token;
mod why;

use std::process::ExitCode;

use crate::args::{
    CaCommand, CertCommand, Cli, Command, DrillCommand, GatewayCommand, TokenCommand, TunnelCommand,
};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ca(CaCommand::Init(args)) => ca::init(args),
        Command::Ca(CaCommand::Intermediate(args)) => ca::intermediate(args),
        Command::Ca(CaCommand::Serve(args)) => ca::serve(args),
        Command::Ca(CaCommand::Revoke(args)) => ca::revoke(args),
        Command::Ca(CaCommand::Bundle(args)) => ca::bundle(args),
        Command::Token(TokenCommand::Create(args)) => token::create(args),
        Command::Token(TokenCommand::List { ca }) => token::list(&ca),
        Command::Gateway(GatewayCommand::Join(args)) => gateway::join(args),
        Command::Cert(CertCommand::Issue(args)) => cert::issue(args),
        Command::Cert(CertCommand::Csr(args)) => cert::csr(args),
        Command::Cert(CertCommand::Sign(args)) => cert::sign(args),
        Command::Cert(CertCommand::Inspect(args)) => cert::inspect(args),
        Command::Cert(CertCommand::Verify(args)) => cert::verify(args),
        Command::Gateway(GatewayCommand::Run(args)) => gateway::run(args),
        Command::Gateway(GatewayCommand::Check {
            config,
            skip_identity,
        }) => gateway::check(&config, skip_identity),
        Command::Tunnel(TunnelCommand::Open(args)) => gateway::tunnel_open(args),
        Command::Demo(args) => demo::run(args),
        Command::Status(args) => status::run(args),
        Command::Why(args) => why::run(args),
        Command::Drill(DrillCommand::Run(args)) => drill::run(args),
        Command::Drill(DrillCommand::End { admin, id }) => drill::end(&admin, id),
    }
}

/// "23h 59m left" or "expired 2d 3h ago", for validity lines.
pub(crate) fn time_left(seconds_left: i64) -> String {
    let span = short_span(seconds_left.unsigned_abs());
    if seconds_left >= 0 {
        format!("{span} left")
    } else {
        format!("expired {span} ago")
    }
}

/// The two largest units of a span: "3652d 12h", "23h 59m", "4m 10s".
fn short_span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, ..) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::time_left;

    #[test]
    fn spans_read_well() {
        assert_eq!(time_left(86_340), "23h 59m left");
        assert_eq!(time_left(10 * 86_400 + 7200), "10d 2h left");
        assert_eq!(time_left(-250), "expired 4m 10s ago");
        assert_eq!(time_left(0), "0s left");
    }
}
