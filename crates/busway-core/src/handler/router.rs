//! Dispatching by CloudEvents `type` to one handler per type.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::service::{Handler, IntoConsumerService};
use super::{HandlerError, Incoming};
use crate::dead_letter::DeadLetterReason;
use crate::error::Error;

type BoxedHandler<S> =
    Arc<dyn Fn(Incoming, S) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

enum Route<S> {
    Handler(BoxedHandler<S>),
    Service(BoxCloneSyncService<Incoming, (), HandlerError>),
}

impl<S> Clone for Route<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Handler(h) => Self::Handler(h.clone()),
            Self::Service(s) => Self::Service(s.clone()),
        }
    }
}

fn boxed<H, T, S>(handler: H) -> Route<S>
where
    H: Handler<T, S>,
    S: 'static,
{
    Route::Handler(Arc::new(move |incoming, state| {
        handler.clone().call(incoming, state)
    }))
}

/// One handler per CloudEvents `type`; messages of a type nobody handles go to the fallback,
/// or are dead-lettered with reason `unknown_type`.
///
/// ```
/// use busway_core::{HandlerError, Json, Router, State};
/// # #[derive(serde::Deserialize)] struct Placed { order: u64 }
/// # #[derive(serde::Deserialize)] struct Cancelled { order: u64 }
/// # #[derive(Clone)] struct Ledger;
///
/// async fn placed(State(_ledger): State<Ledger>, Json(p): Json<Placed>) -> Result<(), HandlerError> {
///     println!("placed {}", p.order);
///     Ok(())
/// }
/// async fn cancelled(Json(c): Json<Cancelled>) {
///     println!("cancelled {}", c.order);
/// }
///
/// let router = Router::new()
///     .route("shop.order.placed.v1", placed)
///     .route("shop.order.cancelled.v1", cancelled);
/// // Run it with `consumer.state(Ledger).start(router)`, or as a service with state:
/// let service = router.with_state(Ledger);
/// # let _ = service;
/// ```
pub struct Router<S = ()> {
    routes: HashMap<String, Route<S>>,
    fallback: Option<Route<S>>,
    /// Types routed twice; reported when the router is started.
    conflicts: Vec<String>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Self {
            routes: HashMap::new(),
            fallback: None,
            conflicts: Vec::new(),
        }
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.routes.keys().collect();
        types.sort();
        f.debug_struct("Router")
            .field("types", &types)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// A router with no routes: everything is dead-lettered as `unknown_type` until routed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles messages of CloudEvents type `ty` with `handler`.
    pub fn route<H, T>(self, ty: impl Into<String>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(ty.into(), boxed(handler))
    }

    /// Handles messages of type `ty` with a tower service (which does not see the state): for
    /// handlers that are services already, such as busway-schema's typed routes.
    pub fn route_service<Svc>(self, ty: impl Into<String>, service: Svc) -> Self
    where
        Svc: Service<Incoming, Response = (), Error = HandlerError> + Clone + Send + Sync + 'static,
        Svc::Future: Send + 'static,
    {
        self.add(ty.into(), Route::Service(BoxCloneSyncService::new(service)))
    }

    /// Handles messages of every type no route names (instead of dead-lettering them).
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.fallback = Some(boxed(handler));
        self
    }

    /// The types routed, sorted.
    pub fn types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    fn add(mut self, ty: String, route: Route<S>) -> Self {
        match self.routes.entry(ty) {
            std::collections::hash_map::Entry::Occupied(taken) => {
                self.conflicts.push(taken.key().clone());
            }
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(route);
            }
        }
        self
    }

    /// The router as a service, its handlers given `state`. Fails when a type was routed twice.
    pub fn try_with_state(self, state: S) -> Result<RouterService, Error> {
        if !self.conflicts.is_empty() {
            return Err(Error::config(
                "router",
                format!(
                    "more than one handler for type {}: route each type once",
                    self.conflicts.join(", ")
                ),
            ));
        }
        let routes: HashMap<String, Route<()>> = self
            .routes
            .into_iter()
            .map(|(ty, route)| (ty, with_state(route, state.clone())))
            .collect();
        Ok(RouterService {
            inner: Arc::new(Inner {
                routes,
                fallback: self.fallback.map(|r| with_state(r, state)),
            }),
        })
    }

    /// The router as a service, its handlers given `state`. A type routed twice makes every
    /// message fail permanently with the configuration error (use
    /// [`try_with_state`](Self::try_with_state), or a consumer's `start`, to find it early).
    pub fn with_state(self, state: S) -> RouterService {
        self.try_with_state(state).unwrap_or_else(|e| {
            let error = Arc::new(e.to_string());
            RouterService {
                inner: Arc::new(Inner {
                    routes: HashMap::new(),
                    fallback: Some(Route::Handler(Arc::new(move |_, ()| {
                        let error = error.clone();
                        Box::pin(async move { Err(HandlerError::permanent(error.to_string())) })
                    }))),
                }),
            }
        })
    }
}

fn with_state<S: Clone + Send + Sync + 'static>(route: Route<S>, state: S) -> Route<()> {
    match route {
        Route::Handler(h) => {
            Route::Handler(Arc::new(move |incoming, ()| h(incoming, state.clone())))
        }
        Route::Service(s) => Route::Service(s),
    }
}

struct Inner {
    routes: HashMap<String, Route<()>>,
    fallback: Option<Route<()>>,
}

/// A [`Router`] with its state: the service a consumer runs.
#[derive(Clone)]
pub struct RouterService {
    inner: Arc<Inner>,
}

impl fmt::Debug for RouterService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.inner.routes.keys().collect();
        types.sort();
        f.debug_struct("RouterService")
            .field("types", &types)
            .finish_non_exhaustive()
    }
}

impl Service<Incoming> for RouterService {
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: Incoming) -> Self::Future {
        let route = self
            .inner
            .routes
            .get(incoming.message.ty())
            .or(self.inner.fallback.as_ref());
        match route {
            Some(Route::Handler(h)) => h(incoming, ()),
            Some(Route::Service(s)) => Box::pin(s.clone().oneshot(incoming)),
            None => {
                let mut known: Vec<&str> = self.inner.routes.keys().map(String::as_str).collect();
                known.sort_unstable();
                let error = HandlerError::permanent(format!(
                    "no handler for event type `{}` (this consumer handles {})",
                    incoming.message.ty(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
                .with_reason(DeadLetterReason::UnknownType);
                Box::pin(std::future::ready(Err(error)))
            }
        }
    }
}

/// Marks the [`IntoConsumerService`] implementation for routers.
#[doc(hidden)]
pub struct IsRouter;

impl<S: Clone + Send + Sync + 'static> IntoConsumerService<IsRouter, S> for Router<S> {
    fn into_consumer_service(
        self,
        state: S,
    ) -> Result<tower::util::BoxCloneService<Incoming, (), HandlerError>, Error> {
        Ok(tower::util::BoxCloneService::new(
            self.try_with_state(state)?,
        ))
    }
}
