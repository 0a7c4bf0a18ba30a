//! Per-run VLM budgets: calls, tokens and money. Spending past a limit is an
//! infrastructure failure of the step that tried, never a silent pass.

use std::sync::Mutex;

use crate::vlm::config::{Budget, Price};

/// What the run has spent so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Spent {
    pub calls: u64,
    pub cache_hits: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetExceeded {
    #[error("the VLM call budget ({limit} calls per run) is used up")]
    Calls { limit: u64 },
    #[error("the VLM token budget ({limit} tokens per run) is used up ({used} used)")]
    Tokens { limit: u64, used: u64 },
    #[error("the VLM cost budget ({limit:.4} per run) is used up ({used:.4} spent)")]
    Cost { limit: f64, used: f64 },
}

/// Tracks spending against the limits.
#[derive(Debug, Default)]
pub struct Meter {
    limits: Budget,
    price: Price,
    spent: Mutex<Spent>,
}

impl Meter {
    pub fn new(limits: Budget, price: Price) -> Meter {
        Meter { limits, price, spent: Mutex::new(Spent::default()) }
    }

    /// May another call be made?
    pub fn check(&self) -> Result<(), BudgetExceeded> {
        let s = self.spent.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(limit) = self.limits.calls
            && s.calls >= limit
        {
            return Err(BudgetExceeded::Calls { limit });
        }
        if let Some(limit) = self.limits.tokens {
            let used = s.prompt_tokens + s.completion_tokens;
            if used >= limit {
                return Err(BudgetExceeded::Tokens { limit, used });
            }
        }
        if let Some(limit) = self.limits.cost
            && s.cost >= limit
        {
            return Err(BudgetExceeded::Cost { limit, used: s.cost });
        }
        Ok(())
    }

    /// Record a call; returns its cost.
    pub fn charge(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        let cost = self.price.cost(prompt_tokens, completion_tokens);
        if let Ok(mut s) = self.spent.lock() {
            s.calls += 1;
            s.prompt_tokens += prompt_tokens;
            s.completion_tokens += completion_tokens;
            s.cost += cost;
        }
        cost
    }

    pub fn cache_hit(&self) {
        if let Ok(mut s) = self.spent.lock() {
            s.cache_hits += 1;
        }
    }

    pub fn spent(&self) -> Spent {
        self.spent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_stop_further_calls() {
        let m = Meter::new(
            Budget { calls: Some(2), tokens: None, cost: Some(0.01) },
            Price { input_per_1k: 0.001, output_per_1k: 0.002 },
        );
        assert!(m.check().is_ok());
        assert!((m.charge(1000, 1000) - 0.003).abs() < 1e-12);
        assert!(m.check().is_ok());
        m.charge(10, 10);
        assert_eq!(m.check(), Err(BudgetExceeded::Calls { limit: 2 }));
        let m = Meter::new(Budget { calls: None, tokens: Some(100), cost: None }, Price::default());
        m.charge(60, 50);
        assert!(matches!(m.check(), Err(BudgetExceeded::Tokens { limit: 100, used: 110 })));
    }
}
