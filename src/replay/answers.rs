//! The capture's answer table: what the capture says about every `(qname, qtype)`, and what
//! follows from it (RFC 8020 NXDOMAIN for every type, the Kubernetes schema).

use std::collections::HashMap;

use crate::event::QueryEvent;
use crate::search::{schema, Answer};

/// How a `(qname, qtype)` is answered, and how sure we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knowledge {
    Captured(Answer),
    Inferred(Answer),
    Unknown,
}

/// What the capture says about each `(qname, qtype)`.
#[derive(Default)]
pub struct AnswerTable {
    answers: HashMap<(Box<str>, u16), Answer>,
    nxdomain: hashbrown::HashSet<Box<str>>,
    domain: String,
}

impl AnswerTable {
    /// An empty table for a cluster under `domain` (the schema's inferences need it).
    pub(super) fn new(domain: &str) -> Self {
        AnswerTable {
            domain: domain.to_string(),
            ..AnswerTable::default()
        }
    }

    pub(super) fn record(&mut self, ev: &QueryEvent) {
        let Some(rcode) = ev.rcode else { return };
        let a = match (rcode, ev.answers) {
            (0, Some(0)) => Answer::NoData,
            (0, _) => Answer::Address,
            (3, _) => Answer::NxDomain,
            (5, _) => Answer::Refused,
            _ => Answer::ServFail,
        };
        let definite = matches!(a, Answer::Address | Answer::NoData | Answer::NxDomain);
        if a == Answer::NxDomain && !self.nxdomain.contains(ev.qname.as_str()) {
            self.nxdomain.insert(ev.qname.as_str().into());
        }
        match self.answers.get_mut(&(ev.qname.as_str().into(), ev.qtype)) {
            Some(prev) => {
                let prev_definite =
                    matches!(prev, Answer::Address | Answer::NoData | Answer::NxDomain);
                if definite || !prev_definite {
                    *prev = a;
                }
            }
            None => {
                self.answers.insert((ev.qname.as_str().into(), ev.qtype), a);
            }
        }
    }

    /// What is known about `qname` (absolute, lowercase) for `qtype`.
    pub fn get(&self, qname: &str, qtype: u16) -> Knowledge {
        if let Some(a) = self.answers.get(&(qname.into(), qtype)) {
            return Knowledge::Captured(*a);
        }
        if self.nxdomain.contains(qname) {
            return Knowledge::Inferred(Answer::NxDomain);
        }
        if !self.domain.is_empty() && !schema::allows(qname, &self.domain) {
            return Knowledge::Inferred(Answer::NxDomain);
        }
        Knowledge::Unknown
    }

    /// Distinct `(qname, qtype)` pairs with an answer.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}
