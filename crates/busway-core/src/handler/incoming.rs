//! What the runtime hands to the handler stack for one attempt.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::delivery::DeliveryInfo;
use crate::message::Message;

/// One delivery as the handler stack sees it: the message, where it came from, and values that
/// layers attached for the handler (e.g. busway-schema's decoding context).
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The message.
    pub message: Message,
    /// Topic, group and attempt number.
    pub info: Arc<DeliveryInfo>,
    /// Values attached by layers, read by the [`Extension`](super::Extension) extractor.
    pub extensions: Extensions,
}

impl Incoming {
    /// A delivery with no extensions.
    pub fn new(message: Message, info: Arc<DeliveryInfo>) -> Self {
        Self {
            message,
            info,
            extensions: Extensions::default(),
        }
    }
}

/// A type map of values layers attach to an [`Incoming`], one per type.
///
/// Cloning is cheap (values are shared) and an empty map allocates nothing, so deliveries that
/// carry none pay nothing.
#[derive(Clone, Default)]
pub struct Extensions {
    map: Option<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Extensions {
    /// Attaches `value`, replacing a value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.map
            .get_or_insert_with(HashMap::new)
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one is attached.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .as_ref()?
            .get(&TypeId::of::<T>())?
            .downcast_ref::<T>()
    }

    /// Whether nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(HashMap::is_empty)
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.as_ref().map_or(0, HashMap::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_hold_one_value_per_type() {
        let mut ext = Extensions::default();
        assert!(ext.is_empty());
        ext.insert(7u32);
        ext.insert("tenant");
        ext.insert(8u32);
        assert_eq!(ext.get::<u32>(), Some(&8));
        assert_eq!(ext.get::<&str>(), Some(&"tenant"));
        assert_eq!(ext.get::<u64>(), None);
        let copy = ext.clone();
        assert_eq!(copy.get::<u32>(), Some(&8));
    }
}
