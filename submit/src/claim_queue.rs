//! Where the claims of one client wait for each other (DESIGN §3.2): in the
//! service, before they check out a pooled database connection, so that a flood
//! of claims from one client holds at most one connection of this replica and
//! every other client's requests find the pool as they would without it.
//!
//! The database still serialises a client's claims across replicas (its advisory
//! lock, `Store::claim_one_time_code`); this queue only keeps the waiting out of
//! the pool. A waiting claim gives up after the wait it is given and fails like a
//! request that found no pooled connection in time.
//!
//! An entry exists only while some claim of its client holds or waits for its
//! turn, so the map never holds more clients than there are claims in flight.
//! This module must never log or expose a client identifier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diagnosis_core::store::ClientIdentifier;
use tokio::sync::OwnedMutexGuard;

/// The turns of every client with a claim in flight.
#[derive(Debug, Default)]
pub struct ClaimQueue {
    clients: Mutex<HashMap<ClientIdentifier, Waiting>>,
}

/// One client's lock and how many claims hold or wait for it.
#[derive(Debug)]
struct Waiting {
    turn: Arc<tokio::sync::Mutex<()>>,
    claims: usize,
}

/// A claim's wait for its client's turn lasted longer than it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the claim waited too long for the earlier claims of its client")]
pub struct QueueTimeout;

/// The turn of one claim: the client's other claims wait until it is dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    // Declared first, so it is released before the ticket leaves the queue.
    _guard: OwnedMutexGuard<()>,
    _ticket: Ticket<'a>,
}

/// A claim's place in its client's entry; dropping it (turn over, wait given up
/// or request abandoned) removes the entry once no claim of the client is left.
#[derive(Debug)]
struct Ticket<'a> {
    queue: &'a ClaimQueue,
    client: ClientIdentifier,
}

impl ClaimQueue {
    /// Waits for `client`'s turn, at most `wait`. Turns are granted in the order
    /// the claims asked for them.
    pub async fn turn(
        &self,
        client: &ClientIdentifier,
        wait: Duration,
    ) -> Result<Turn<'_>, QueueTimeout> {
        let (ticket, turn) = self.join(client);
        let guard = tokio::time::timeout(wait, turn.lock_owned())
            .await
            .map_err(|_| QueueTimeout)?;
        Ok(Turn {
            _guard: guard,
            _ticket: ticket,
        })
    }

    /// How many clients have a claim in flight.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }

    fn join(&self, client: &ClientIdentifier) -> (Ticket<'_>, Arc<tokio::sync::Mutex<()>>) {
        let mut clients = self.lock();
        let waiting = clients.entry(client.clone()).or_insert_with(|| Waiting {
            turn: Arc::default(),
            claims: 0,
        });
        waiting.claims += 1;
        let turn = Arc::clone(&waiting.turn);
        let ticket = Ticket {
            queue: self,
            client: client.clone(),
        };
        (ticket, turn)
    }

    fn leave(&self, client: &ClientIdentifier) {
        let mut clients = self.lock();
        if let Some(waiting) = clients.get_mut(client) {
            waiting.claims = waiting.claims.saturating_sub(1);
            if waiting.claims == 0 {
                clients.remove(client);
            }
        }
    }

    /// The map is only ever changed by the few lines above, which cannot leave
    /// it half-changed, so a poisoned lock still guards a consistent map.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientIdentifier, Waiting>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.queue.leave(&self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diagnosis_core::store::ClientIdentityKey;

    fn client(last: u8) -> ClientIdentifier {
        let key = ClientIdentityKey::from_secret(&[1; 32]).unwrap();
        ClientIdentifier::new(&key, std::net::IpAddr::from([192, 0, 2, last]))
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_client_waits_and_another_does_not() {
        let queue = ClaimQueue::default();
        let first = queue.turn(&client(1), LONG).await.unwrap();
        let waited = queue.turn(&client(1), Duration::from_millis(20)).await;
        assert_eq!(waited.err(), Some(QueueTimeout));
        let other = queue.turn(&client(2), Duration::from_millis(20)).await;
        assert!(other.is_ok(), "another client waited");
        drop(first);
        assert!(queue.turn(&client(1), LONG).await.is_ok());
    }

    #[tokio::test]
    async fn turns_are_granted_in_order_and_entries_leave_when_unused() {
        let queue = Arc::new(ClaimQueue::default());
        let first = queue.turn(&client(1), LONG).await.unwrap();
        let (order, mut granted) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for index in 0..5 {
            let (waiting, order) = (Arc::clone(&queue), order.clone());
            waiters.push(tokio::spawn(async move {
                let _turn = waiting.turn(&client(1), LONG).await.unwrap();
                order.send(index).unwrap();
            }));
            // Each waiter asks for its turn before the next one is started.
            while queue.lock().get(&client(1)).map(|w| w.claims) != Some(index + 2) {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(queue.clients(), 1);
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        drop(order);
        let mut seen = Vec::new();
        while let Some(index) = granted.recv().await {
            seen.push(index);
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(queue.clients(), 0, "an unused entry stayed");
    }

    #[tokio::test]
    async fn waits_given_up_or_abandoned_leave_no_entry() {
        let queue = Arc::new(ClaimQueue::default());
        let held = queue.turn(&client(1), LONG).await.unwrap();
        assert!(
            queue
                .turn(&client(1), Duration::from_millis(10))
                .await
                .is_err()
        );
        let waiting = Arc::clone(&queue);
        let abandoned = tokio::spawn(async move {
            let _turn = waiting.turn(&client(1), LONG).await;
        });
        while queue.lock().get(&client(1)).map(|w| w.claims) != Some(2) {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        assert_eq!(queue.lock().get(&client(1)).map(|w| w.claims), Some(1));
        drop(held);
        assert_eq!(queue.clients(), 0);
        for last in 0..100 {
            drop(queue.turn(&client(last), LONG).await.unwrap());
        }
        assert_eq!(queue.clients(), 0);
    }
}
