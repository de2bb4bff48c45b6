//! `entente-agent`: the per-host agent.

fn main() {
    eprintln!("entente-agent: the negotiation loop is not wired yet; its parts live in the library");
    std::process::exit(2);
}
