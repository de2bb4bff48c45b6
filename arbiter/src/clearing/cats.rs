//! Reader for the CATS winner-determination format, so the engine can be measured against
//! published optima (see `shared/benchmarks/cats/README.md`).
//!
//! Parsing works on text the caller has already read: the clearing module does no I/O. A CATS
//! instance maps onto a [`Problem`] directly: each real good is a row of capacity 1, each dummy
//! good (the mark of one bidder's XOR bids) becomes a group, and a bid without a dummy good is a
//! group of its own.

use super::problem::Problem;

/// A parsed CATS file.
#[derive(Debug, Clone, PartialEq)]
pub struct CatsInstance {
    pub goods: usize,
    pub dummy: usize,
    pub bids: Vec<CatsBid>,
}

/// One bid line: `<id> <price> <good>... #`.
#[derive(Debug, Clone, PartialEq)]
pub struct CatsBid {
    pub id: usize,
    pub price: f64,
    /// Real goods, ascending.
    pub goods: Vec<usize>,
    /// The dummy good (bidder mark), if any.
    pub dummy: Option<usize>,
}

/// A problem in the CATS file, with the line it was found on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CatsError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> CatsError {
    CatsError { line, message: message.into() }
}

impl CatsInstance {
    /// Parses the text of a CATS file.
    pub fn parse(text: &str) -> Result<CatsInstance, CatsError> {
        let (mut goods, mut bids_declared, mut dummy) = (None, None, None);
        let mut bids: Vec<CatsBid> = Vec::new();
        let mut last_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            last_line = line;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('%') {
                continue;
            }
            let mut fields = content.split_whitespace();
            let first = fields.next().unwrap_or_default();
            if let Some(slot) = match first {
                "goods" => Some(&mut goods),
                "bids" => Some(&mut bids_declared),
                "dummy" => Some(&mut dummy),
                _ => None,
            } {
                let count = fields
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| err(line, format!("`{first}` needs a non-negative integer count")))?;
                if fields.next().is_some() {
                    return Err(err(line, format!("unexpected text after `{first} {count}`")));
                }
                if slot.replace(count).is_some() {
                    return Err(err(line, format!("`{first}` is declared twice")));
                }
                continue;
            }
            let (Some(goods), Some(_), dummy_count) = (goods, bids_declared, dummy) else {
                return Err(err(line, "a bid appears before the `goods` and `bids` header lines"));
            };
            let dummy_count = dummy_count.unwrap_or(0);
            let id: usize = first.parse().map_err(|_| err(line, format!("bid id `{first}` is not an integer")))?;
            if id != bids.len() {
                return Err(err(line, format!("bid id {id} out of order (expected {})", bids.len())));
            }
            let price_text = fields.next().ok_or_else(|| err(line, "bid has no price"))?;
            let price: f64 =
                price_text.parse().map_err(|_| err(line, format!("price `{price_text}` is not a number")))?;
            if !price.is_finite() || price < 0.0 {
                return Err(err(line, format!("price {price_text} must be a finite non-negative number")));
            }
            let mut bid_goods = Vec::new();
            let mut bid_dummy = None;
            let mut terminated = false;
            for field in fields.by_ref() {
                if field == "#" {
                    terminated = true;
                    break;
                }
                let good: usize =
                    field.parse().map_err(|_| err(line, format!("good `{field}` is not a non-negative integer")))?;
                if good < goods {
                    bid_goods.push(good);
                } else if good < goods + dummy_count {
                    if bid_dummy.replace(good).is_some() {
                        return Err(err(line, "bid has more than one dummy good"));
                    }
                } else {
                    return Err(err(line, format!("good {good} is out of range (goods {goods}, dummy {dummy_count})")));
                }
            }
            if !terminated {
                return Err(err(line, "bid line does not end with `#`"));
            }
            if fields.next().is_some() {
                return Err(err(line, "unexpected text after `#`"));
            }
            bid_goods.sort_unstable();
            if bid_goods.windows(2).any(|w| w[0] == w[1]) {
                return Err(err(line, "bid names the same good twice"));
            }
            bids.push(CatsBid { id, price, goods: bid_goods, dummy: bid_dummy });
        }
        let goods = goods.ok_or_else(|| err(last_line, "missing `goods` header line"))?;
        let declared = bids_declared.ok_or_else(|| err(last_line, "missing `bids` header line"))?;
        if declared != bids.len() {
            return Err(err(last_line, format!("header declares {declared} bids but the file has {}", bids.len())));
        }
        Ok(CatsInstance { goods, dummy: dummy.unwrap_or(0), bids })
    }

    /// The winner-determination problem. Item `k` of the problem is bid `k`.
    pub fn to_problem(&self) -> Problem {
        let mut problem = Problem::new(vec![1; self.goods]);
        let mut dummy_group = vec![None; self.dummy];
        for bid in &self.bids {
            let group = match bid.dummy {
                Some(d) => *dummy_group[d - self.goods].get_or_insert_with(|| problem.add_group()),
                None => problem.add_group(),
            };
            problem
                .add_item(group, bid.price, bid.goods.iter().map(|&g| (g, 1)))
                .expect("goods are in range and distinct");
        }
        problem
    }
}
