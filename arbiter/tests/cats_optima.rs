//! The solver against the CATS answer key: every proven instance of `small/` and `int/` must be
//! solved to its proven optimum (1e-6 relative), and every answer must pass an independent
//! feasibility check that reads the instance file on its own.
//!
//! The benchmark lives in the shared directory cloned beside the repository; set
//! `ENTENTE_CATS_DIR` to point elsewhere. A missing benchmark is a failure, not a skip.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use entente_arbiter::clearing::{solve, CatsInstance, SolveOptions};

fn cats_dir() -> PathBuf {
    let dir = match std::env::var_os("ENTENTE_CATS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/benchmarks/cats"),
    };
    assert!(
        dir.join("answers.tsv").is_file(),
        "CATS benchmark not found at {} (expected answers.tsv there): clone shared/ beside the \
         repository or set ENTENTE_CATS_DIR",
        dir.display()
    );
    dir
}

struct Answer {
    set: String,
    file: String,
    optimum: f64,
}

fn proven_answers(dir: &Path) -> Vec<Answer> {
    let key = std::fs::read_to_string(dir.join("answers.tsv")).expect("answers.tsv is readable");
    let mut lines = key.lines();
    let header: Vec<&str> = lines.next().expect("answers.tsv has a header").split('\t').collect();
    let column = |name: &str| header.iter().position(|&h| h == name).unwrap_or_else(|| panic!("no `{name}` column"));
    let (set, file, optimum, proven) = (column("set"), column("file"), column("optimum"), column("proven"));
    lines
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .filter(|row| row[proven] == "true" && (row[set] == "small" || row[set] == "int"))
        .map(|row| Answer {
            set: row[set].to_string(),
            file: row[file].to_string(),
            optimum: row[optimum].parse().expect("optimum is a number"),
        })
        .collect()
}

/// Independent of the solver and of [`CatsInstance`]: reads every bid line as `id price goods... #`
/// and checks that no good, real or dummy (so no bidder), is used twice; returns the welfare.
fn check_winners(text: &str, winners: &[usize]) -> Result<f64, String> {
    let mut bids = std::collections::HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.last() == Some(&"#") {
            let id: usize = fields[0].parse().map_err(|_| format!("bad bid line {line}"))?;
            let price: f64 = fields[1].parse().map_err(|_| format!("bad bid line {line}"))?;
            let goods: Vec<usize> = fields[2..fields.len() - 1].iter().map(|g| g.parse().unwrap()).collect();
            bids.insert(id, (price, goods));
        }
    }
    let mut used = HashSet::new();
    let mut welfare = 0.0;
    for w in winners {
        let (price, goods) = bids.get(w).ok_or(format!("winner {w} is not a bid"))?;
        for g in goods {
            if !used.insert(*g) {
                return Err(format!("good {g} is sold twice (bid {w})"));
            }
        }
        welfare += price;
    }
    Ok(welfare)
}

#[test]
fn every_proven_small_and_int_instance_is_solved_to_its_optimum() {
    let dir = cats_dir();
    let answers = proven_answers(&dir);
    assert_eq!(answers.len(), 40, "answer key should list 40 proven small/int instances");
    let mut failures = Vec::new();
    for answer in &answers {
        let path = dir.join(&answer.set).join(&answer.file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let instance = CatsInstance::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let solution = solve(&instance.to_problem(), &SolveOptions::default());
        let welfare = match check_winners(&text, &solution.chosen) {
            Ok(w) => w,
            Err(e) => {
                failures.push(format!("{}: infeasible answer: {e}", answer.file));
                continue;
            }
        };
        let tolerance = 1e-6 * answer.optimum.abs().max(1.0);
        if !solution.optimal
            || (welfare - answer.optimum).abs() > tolerance
            || (solution.value - welfare).abs() > tolerance
        {
            failures.push(format!(
                "{}: welfare {welfare} (reported {}, optimal {}) but the optimum is {}",
                answer.file, solution.value, solution.optimal, answer.optimum
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_independent_checker_rejects_a_good_sold_twice() {
    let text = "goods 2\nbids 2\n0\t1.0\t0\t1\t#\n1\t2.0\t1\t#\n";
    assert!(check_winners(text, &[0, 1]).is_err());
    assert_eq!(check_winners(text, &[1]), Ok(2.0));
}
