//! One stream's ordering lanes: one per active key under `keyed_fifo`, one for the whole
//! stream otherwise, each a queue of messages in sequence order that one worker runs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Messages per chunk of a lane's queue.
const CHUNK: usize = 32;

/// The most emptied chunks a stream keeps for reuse, beyond lanes' first chunks (beyond
/// them, memory goes back as the lanes empty). A lane's first chunk stays with its slot for
/// the next key: a stream holds at most its peak number of lanes' worth.
const SPARE: usize = 64;

/// A lane's place in its stream's [`Lanes`].
pub(crate) type LaneId = usize;

/// A message, as it goes into its lane and comes out.
pub(crate) struct Queued<T> {
    pub(crate) seq: u64,
    /// Its own key where it differs from its lane's: global FIFO with a key function, where
    /// every message has one. (A lane keeps these apart from its entries, so that the modes
    /// without them do not carry an empty slot per message.)
    pub(crate) key: Option<Arc<str>>,
    pub(crate) item: T,
}

/// A message waiting in its lane.
struct Entry<T> {
    seq: u64,
    item: T,
}

/// Messages taken out of their lanes, to be rejected; each has its key.
pub(crate) struct Left<T> {
    pub(crate) messages: Vec<Queued<T>>,
    /// How many of them were counted as waiting behind another.
    pub(crate) behind: usize,
}

impl<T> Default for Left<T> {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            behind: 0,
        }
    }
}

/// A stream's lanes, kept under one lock: queueing a message, or taking a lane's next one, is
/// one lock, with the waiting count kept under it.
pub(crate) struct Lanes<T> {
    /// The open lanes by key: a lane opens with its first message (its worker is spawned
    /// next) and closes when its worker finds it empty, or when the worker fails.
    index: HashMap<Arc<str>, LaneId, foldhash::fast::RandomState>,
    /// The lanes, active or free.
    slots: Vec<Lane<T>>,
    free: Vec<LaneId>,
    /// Emptied chunks, for any lane to reuse.
    spare: Vec<VecDeque<Entry<T>>>,
    /// Messages waiting behind an earlier one, over all lanes.
    waiting: usize,
}

/// One lane: its key and its messages.
struct Lane<T> {
    key: Arc<str>,
    /// Its messages in sequence order, in chunks of [`CHUNK`]: a lane that grows never moves
    /// what it holds (a doubling buffer copies it all, into memory just faulted in), and the
    /// chunks it has run are reused as it goes. The first chunk is held here, so taking the
    /// next message follows one pointer less; it is empty only when the lane is.
    head: VecDeque<Entry<T>>,
    /// The chunks after the first.
    rest: VecDeque<VecDeque<Entry<T>>>,
    /// The messages' own keys, in the same order, where they have them (all or none do: only
    /// global FIFO with a key function). A plain deque: it grows by doubling, as entries
    /// did before they moved to chunks, but holds pointers, not messages.
    keys: VecDeque<Arc<str>>,
    len: usize,
    /// Whether its worker took its first message. Every later message waits behind an
    /// earlier one; the first message of an idle lane does not.
    started: bool,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
            waiting: 0,
        }
    }
}

impl<T> Lanes<T> {
    /// Messages waiting behind an earlier one, over all lanes: what the ordering capacity
    /// counts.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// The active lane of `key`.
    pub(crate) fn find(&self, key: &str) -> Option<LaneId> {
        self.index.get(key).copied()
    }

    /// Opens a lane for `key` with its first message, for a new worker to run.
    pub(crate) fn open(&mut self, key: Arc<str>, first: Queued<T>) -> LaneId {
        let id = match self.free.pop() {
            Some(id) => {
                let lane = &mut self.slots[id];
                debug_assert!(lane.len == 0 && lane.keys.is_empty());
                lane.key = Arc::clone(&key);
                lane.started = false;
                id
            }
            None => {
                self.slots.push(Lane {
                    key: Arc::clone(&key),
                    head: VecDeque::new(),
                    rest: VecDeque::new(),
                    keys: VecDeque::new(),
                    len: 0,
                    started: false,
                });
                self.slots.len() - 1
            }
        };
        self.append(id, first);
        self.index.insert(key, id);
        id
    }

    /// Queues a message behind the lane's earlier ones; answers the lane's length.
    pub(crate) fn push(&mut self, id: LaneId, message: Queued<T>) -> usize {
        self.waiting += 1;
        self.append(id, message)
    }

    fn append(&mut self, id: LaneId, message: Queued<T>) -> usize {
        let lane = &mut self.slots[id];
        let Queued { seq, key, item } = message;
        let message = Entry { seq, item };
        if let Some(key) = key {
            lane.keys.push_back(key);
        }
        if lane.rest.is_empty() && lane.head.len() < CHUNK {
            lane.head.push_back(message);
        } else {
            match lane.rest.back_mut() {
                Some(chunk) if chunk.len() < CHUNK => chunk.push_back(message),
                _ => {
                    // A lane's first chunk starts small (most lanes hold a message or two)
                    // and grows to `CHUNK`; a lane that needs more is busy, and its later
                    // chunks are made full size at once.
                    let mut chunk = self
                        .spare
                        .pop()
                        .unwrap_or_else(|| VecDeque::with_capacity(CHUNK));
                    chunk.push_back(message);
                    lane.rest.push_back(chunk);
                }
            }
        }
        lane.len += 1;
        lane.len
    }

    /// A lane's next message, out of the waiting count, and whether it was counted there.
    pub(crate) fn pop(&mut self, id: LaneId) -> Option<(Queued<T>, bool)> {
        let lane = &mut self.slots[id];
        let next = lane.head.pop_front()?;
        if lane.head.is_empty()
            && let Some(chunk) = lane.rest.pop_front()
        {
            let emptied = std::mem::replace(&mut lane.head, chunk);
            Self::recycle(&mut self.spare, emptied);
        }
        lane.len -= 1;
        let behind = std::mem::replace(&mut lane.started, true);
        self.waiting -= usize::from(behind);
        let next = Queued {
            seq: next.seq,
            key: lane.keys.pop_front(),
            item: next.item,
        };
        Some((next, behind))
    }

    fn recycle(spare: &mut Vec<VecDeque<Entry<T>>>, chunk: VecDeque<Entry<T>>) {
        if spare.len() < SPARE {
            spare.push(chunk);
        }
    }

    /// Closes a lane (its worker stops); answers what was still in it. Closing a lane that
    /// is not open (closed already) does nothing.
    pub(crate) fn close(&mut self, id: LaneId) -> Left<T> {
        let mut left = Left::default();
        if self.index.get(&self.slots[id].key) != Some(&id) {
            return left;
        }
        self.index.remove(&self.slots[id].key);
        self.free.push(id);
        self.take(id, &mut left);
        left
    }

    /// Takes every message out of every lane; the lanes stay open, for their workers to find
    /// empty.
    pub(crate) fn drain(&mut self) -> Left<T> {
        let mut left = Left::default();
        for id in 0..self.slots.len() {
            self.take(id, &mut left);
        }
        left
    }

    /// Takes a lane's messages into `left`, out of the waiting count.
    fn take(&mut self, id: LaneId, left: &mut Left<T>) {
        let lane = &mut self.slots[id];
        // All wait behind another but an unstarted lane's first; from now on, any later
        // message of the lane is behind one taken here.
        let behind = lane.len - usize::from(lane.len > 0 && !lane.started);
        lane.started = true;
        self.waiting -= behind;
        left.behind += behind;
        lane.len = 0;
        // Each with its key: its own, or its lane's.
        let key = |seq, item, keys: &mut VecDeque<Arc<str>>, lane: &Arc<str>| Queued {
            seq,
            key: keys
                .pop_front()
                .or_else(|| (!lane.is_empty()).then(|| Arc::clone(lane))),
            item,
        };
        for Entry { seq, item } in lane.head.drain(..) {
            left.messages
                .push(key(seq, item, &mut lane.keys, &lane.key));
        }
        for mut chunk in lane.rest.drain(..) {
            for Entry { seq, item } in chunk.drain(..) {
                left.messages
                    .push(key(seq, item, &mut lane.keys, &lane.key));
            }
            Self::recycle(&mut self.spare, chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Queued<u64> {
        Queued {
            seq,
            key: None,
            item: seq,
        }
    }

    /// A lane hands its messages back in order across chunk boundaries, counts what waits
    /// behind its first, and reuses its emptied chunks.
    #[test]
    fn lanes_keep_order_and_count_across_chunks() {
        let mut lanes = Lanes::default();
        let a = lanes.open(Arc::from("a"), message(1));
        for seq in 2..=100 {
            assert_eq!(lanes.push(a, message(seq)), seq as usize);
        }
        assert_eq!(lanes.waiting(), 99);
        let mut seen = Vec::new();
        while let Some((next, behind)) = lanes.pop(a) {
            assert_eq!(behind, next.seq > 1);
            seen.push(next.seq);
        }
        assert_eq!(seen, (1..=100).collect::<Vec<_>>());
        assert_eq!(lanes.waiting(), 0);
        assert_eq!(
            lanes.spare.len(),
            3,
            "three emptied chunks kept, the last one in place"
        );
        assert!(lanes.slots[a].rest.is_empty());
        assert!(lanes.close(a).messages.is_empty());
        assert_eq!(lanes.find("a"), None);
        // A second close does nothing: the slot is not freed twice.
        assert!(lanes.close(a).messages.is_empty());
        assert_eq!(lanes.free, [a]);
    }

    /// Messages with their own keys (one lane for the whole stream) get them back, in
    /// order, whether taken by the worker or drained.
    #[test]
    fn own_keys_travel_with_their_messages() {
        let own = |seq: u64, key: &str| Queued {
            seq,
            key: Some(Arc::from(key)),
            item: seq,
        };
        let mut lanes = Lanes::default();
        let all = lanes.open(Arc::from(""), own(1, "x"));
        for (seq, key) in [(2, "y"), (3, "x"), (4, "z")] {
            lanes.push(all, own(seq, key));
        }
        let (first, _) = lanes.pop(all).unwrap();
        assert_eq!((first.seq, first.key.as_deref()), (1, Some("x")));
        let (second, _) = lanes.pop(all).unwrap();
        assert_eq!((second.seq, second.key.as_deref()), (2, Some("y")));
        let left = lanes.drain();
        let keys: Vec<(u64, &str)> = left
            .messages
            .iter()
            .map(|m| (m.seq, m.key.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(keys, [(3, "x"), (4, "z")]);
    }

    /// Draining takes every lane's messages with their keys and the right waiting count;
    /// a closed lane's slot and chunks serve the next key.
    #[test]
    fn drain_and_close_give_back_what_waits() {
        let mut lanes = Lanes::default();
        let a = lanes.open(Arc::from("a"), message(1));
        let b = lanes.open(Arc::from("b"), message(2));
        lanes.push(a, message(3));
        assert!(lanes.pop(b).is_some());
        lanes.push(b, message(4));
        assert_eq!(lanes.waiting(), 2);
        let left = lanes.drain();
        // a's first never started, so it did not wait behind another.
        assert_eq!(left.behind, 2);
        let keys: Vec<(u64, &str)> = left
            .messages
            .iter()
            .map(|m| (m.seq, m.key.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(keys, [(1, "a"), (3, "a"), (4, "b")]);
        assert_eq!(lanes.waiting(), 0);
        // After a drain, a lane's next message waits behind the ones taken.
        lanes.push(a, message(5));
        assert_eq!(lanes.waiting(), 1);
        let left = lanes.close(a);
        assert_eq!((left.messages.len(), left.behind), (1, 1));
        assert_eq!(lanes.waiting(), 0);
        let c = lanes.open(Arc::from("c"), message(6));
        assert_eq!(c, a, "the free slot is reused");
        assert_eq!(lanes.find("c"), Some(c));
        assert_eq!(
            lanes.pop(c).map(|(m, behind)| (m.seq, behind)),
            Some((6, false))
        );
    }
}
