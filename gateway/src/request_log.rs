//! The last N finished requests, for `GET /recent_requests`; `report` fills it.

use jetinfer_shared::protocol::RequestRecord;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Fixed-size ring of the newest records.
pub struct RequestLog {
    capacity: usize,
    records: Mutex<VecDeque<RequestRecord>>,
}

impl RequestLog {
    /// A log keeping the newest `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            records: Mutex::new(VecDeque::with_capacity(capacity.min(65_536))),
        }
    }

    /// Most records kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Add a record, dropping the oldest when full.
    pub fn push(&self, record: RequestRecord) {
        if self.capacity == 0 {
            return;
        }
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The newest `limit` records, newest first.
    pub fn newest(&self, limit: usize) -> Vec<RequestRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_shared::protocol::Task;
    use uuid::Uuid;

    fn record(i: u64) -> RequestRecord {
        RequestRecord {
            request_id: Uuid::new_v4(),
            task: Task::Embed,
            outcome: "ok".into(),
            status: 200,
            worker_id: None,
            retries: 0,
            latency_ms: 1.0,
            error: None,
            input_chars: 0,
            input_hash: String::new(),
            input: String::new(),
            output: None,
            finished_at_ms: i,
        }
    }

    #[test]
    fn keeps_the_newest_first() {
        let log = RequestLog::new(3);
        for i in 0..5 {
            log.push(record(i));
        }
        let at: Vec<u64> = log.newest(10).iter().map(|r| r.finished_at_ms).collect();
        assert_eq!(at, [4, 3, 2]);
        assert_eq!(log.newest(1).len(), 1);
    }
}
