//! The pool as the store's queries use it: each query, and each transaction while it is
//! open, holds the contract's [`Busy`] guard, so that a test on a paused clock does not
//! jump past its timers while SQLite works on a thread of its own. Outside such a test the
//! guard does nothing.

use std::ops::{Deref, DerefMut};

use aloft_agent_api::clock::Busy;
use futures_util::{FutureExt as _, StreamExt as _};
use sqlx::any::{Any, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{AnyConnection, AnyPool};
use sqlx::{Describe, Either, Error, Execute, Executor, Transaction};

/// The store's pool, with a [`Busy`] guard that its queries carry until they end.
#[derive(Debug)]
pub(crate) struct Pooled<'p> {
    pool: &'p AnyPool,
    busy: Busy,
}

impl<'p> Pooled<'p> {
    pub(crate) fn new(pool: &'p AnyPool) -> Pooled<'p> {
        Pooled {
            pool,
            busy: Busy::new(),
        }
    }

    /// Begins a transaction that holds the guard until it is committed or dropped.
    pub(crate) async fn begin(self) -> Result<Tx, Error> {
        let tx = self.pool.begin().await?;
        Ok(Tx {
            tx,
            _busy: self.busy,
        })
    }
}

impl<'p> Executor<'p> for Pooled<'p> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures_util::stream::BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let busy = self.busy;
        self.pool
            .fetch_many(query)
            .map(move |item| {
                let _held = &busy;
                item
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures_util::future::BoxFuture<'e, Result<Option<AnyRow>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let busy = self.busy;
        self.pool
            .fetch_optional(query)
            .map(move |result| {
                drop(busy);
                result
            })
            .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> futures_util::future::BoxFuture<'e, Result<AnyStatement<'q>, Error>>
    where
        'p: 'e,
    {
        let busy = self.busy;
        self.pool
            .prepare_with(sql, parameters)
            .map(move |result| {
                drop(busy);
                result
            })
            .boxed()
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> futures_util::future::BoxFuture<'e, Result<Describe<Any>, Error>>
    where
        'p: 'e,
    {
        let busy = self.busy;
        self.pool
            .describe(sql)
            .map(move |result| {
                drop(busy);
                result
            })
            .boxed()
    }
}

/// A transaction of the store's, holding the [`Busy`] guard while open. Queries run on
/// `&mut *tx` (the connection), as on a sqlx transaction.
#[derive(Debug)]
pub(crate) struct Tx {
    tx: Transaction<'static, Any>,
    _busy: Busy,
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}
