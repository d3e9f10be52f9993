//! The machinery behind the settings table in `config.rs`: the
//! `settings_table!` macro, which turns the rows into the flags and file keys
//! ([`Settings`](super::Settings)), the layered and checked values
//! ([`Values`](super::Values)), the limits SIGHUP changes at once
//! ([`LiveLimits`](super::LiveLimits)) and the rows the docs are rendered
//! from ([`table`](super::table)); and the checks a row may name.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{ConfigError, Engine, Mode};

/// How SIGHUP treats a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// A limit read at every use, from [`LiveLimits`](super::LiveLimits):
    /// the new value applies at once.
    Limit,
    /// Read from the running config where it is used: applies at once.
    Live,
    /// Read once at start: a changed value is logged as a warning and
    /// waits for a restart (the running daemon keeps the old one).
    Restart,
}

/// One row of the table, as the docs and the help show it.
#[derive(Debug)]
pub struct Setting {
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the docs' table, rendered in tests")
    )]
    pub key: &'static str,
    pub reload: Reload,
    /// The default as shown to people.
    pub default: String,
    /// One paragraph: what it bounds, what happens past it.
    pub doc: String,
}

impl Setting {
    /// The flag's help: the doc line, restart-only or not, the default.
    pub fn help(&self) -> String {
        let restart = if self.reload == Reload::Restart {
            " (restart to change)"
        } else {
            ""
        };
        format!("{}{restart} [default: {}]", self.doc, self.default)
    }
}

/// A doc comment's lines as one paragraph.
pub fn paragraph(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The storage of a live limit: an atomic its readers load without a lock.
pub trait LiveValue {
    type Cell: Default + std::fmt::Debug;
    fn store(&self, cell: &Self::Cell);
}

impl LiveValue for usize {
    type Cell = AtomicUsize;
    fn store(&self, cell: &AtomicUsize) {
        cell.store(*self, Ordering::Relaxed);
    }
}

impl LiveValue for u64 {
    type Cell = AtomicU64;
    fn store(&self, cell: &AtomicU64) {
        cell.store(*self, Ordering::Relaxed);
    }
}

/// `None` (no limit of our own) is stored as `usize::MAX`.
impl LiveValue for Option<usize> {
    type Cell = AtomicUsize;
    fn store(&self, cell: &AtomicUsize) {
        cell.store(self.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}

/// How a value is reported among the limits of `finderd stats` (0: none);
/// `None`: not a number, not reported.
pub trait Reported {
    fn reported(&self) -> Option<u64>;
}

macro_rules! reported_as_numbers {
    ($($ty:ty),*) => {$(
        impl Reported for $ty {
            fn reported(&self) -> Option<u64> {
                u64::try_from(*self).ok()
            }
        }
    )*};
}

reported_as_numbers!(usize, u64, u32);

impl Reported for Option<usize> {
    fn reported(&self) -> Option<u64> {
        Some(self.map_or(0, |v| v as u64))
    }
}

macro_rules! not_reported {
    ($($ty:ty),*) => {$(
        impl Reported for $ty {
            fn reported(&self) -> Option<u64> {
                None
            }
        }
    )*};
}

not_reported!(
    Option<PathBuf>,
    Option<String>,
    Option<Mode>,
    Engine,
    Vec<String>
);

/// A number a check can compare.
pub trait Number: Copy + std::fmt::Display {
    fn as_u64(self) -> u64;
}

macro_rules! numbers {
    ($($ty:ty),*) => {$(
        impl Number for $ty {
            fn as_u64(self) -> u64 {
                self as u64
            }
        }
    )*};
}

numbers!(usize, u64, u32);

fn invalid<T: Number>(key: &'static str, value: T, why: String) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        why,
    }
}

/// A row's check: refuses values below `min`, naming the key.
pub fn at_least<T: Number>(min: u64) -> impl Fn(&'static str, T) -> Result<T, ConfigError> {
    move |key, value| {
        if value.as_u64() < min {
            return Err(invalid(key, value, format!("must be at least {min}")));
        }
        Ok(value)
    }
}

/// A row's check: refuses values outside `min..=max`, naming the key.
pub fn between<T: Number>(
    min: u64,
    max: u64,
) -> impl Fn(&'static str, T) -> Result<T, ConfigError> {
    move |key, value| {
        if !(min..=max).contains(&value.as_u64()) {
            return Err(invalid(
                key,
                value,
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(value)
    }
}

/// A row's check: raises values below `min` to it (a shorter period would
/// only burn CPU; nothing is refused).
pub fn raised_to(min: u64) -> impl Fn(&'static str, u64) -> Result<u64, ConfigError> {
    move |_key, value| Ok(value.max(min))
}

/// Generates everything the table in `config.rs` derives: see the module
/// documentation. Each row is its doc comment (the flag's help and the
/// docs' description), `key: Type`, and in braces:
///
/// - `default: EXPR` (then the value is a `Type`), or nothing (then it is an
///   `Option<Type>`, `None` when not given, and `shown:` says what that
///   means);
/// - `shown: "..."`, the default as people read it, when `Display` of the
///   default would not say it;
/// - `reload: Limit | Live | Restart` (see [`Reload`]);
/// - `check: EXPR`, a check on the value ([`at_least`], [`between`],
///   [`raised_to`]);
/// - `arg: (...)`, the clap argument, and `serde: (...)` for the file.
macro_rules! settings_table {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident: $ty:ty {
            $(default: $default:expr,)?
            $(shown: $shown:literal,)?
            reload: $reload:ident,
            $(check: $check:expr,)?
            arg: ($($arg:tt)*),
            $(serde: ($($serde:tt)*),)?
        }
    )*) => {
        /// The `finderd serve` flags and the config file's keys, as given
        /// (`None`: not given). Generated from the table.
        #[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Settings {
            $(
                #[arg($($arg)*, help = row!($key).help())]
                $(#[serde($($serde)*)])?
                pub $key: Option<$ty>,
            )*
        }

        impl Settings {
            /// `over`'s values where given, else these.
            pub fn layered(self, over: Settings) -> Settings {
                Settings { $($key: over.$key.or(self.$key)),* }
            }
        }

        /// Every setting's value: given (flags over the file), else its
        /// default; checked. Generated from the table.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Values {
            $(pub $key: value_type!($ty $(, $default)?),)*
        }

        impl Default for Values {
            fn default() -> Self {
                Values { $($key: default_value!($($default)?),)* }
            }
        }

        impl Values {
            /// Fills what `settings` leaves out with the defaults and checks
            /// every value.
            pub fn resolve(settings: Settings) -> Result<Values, ConfigError> {
                Ok(Values {
                    $($key: resolve_value!(
                        $key, settings.$key, [$($default)?], [$($check)?]
                    ),)*
                })
            }

            /// What a SIGHUP with `new` leaves running: `new`'s values
            /// where they apply while serving, these otherwise; and the
            /// restart-only keys whose value differs (to be warned about).
            pub fn reloaded(&self, new: Values) -> (Values, Vec<&'static str>) {
                let mut waiting = Vec::new();
                let values = Values {
                    $($key: if $crate::config::Reload::$reload == $crate::config::Reload::Restart {
                        if self.$key != new.$key {
                            waiting.push(stringify!($key));
                        }
                        self.$key.clone()
                    } else {
                        new.$key
                    },)*
                };
                (values, waiting)
            }

            /// Every numeric setting by key, as `finderd stats` reports its
            /// limits (0: none).
            pub fn limits(&self) -> Vec<(&'static str, u64)> {
                let mut limits = Vec::new();
                $(
                    if let Some(value) = $crate::config::Reported::reported(&self.$key) {
                        limits.push((stringify!($key), value));
                    }
                )*
                limits
            }
        }

        live_limits!(@rows [] $($reload $key (value_type!($ty $(, $default)?));)*);

        /// Every row, in table order: the docs' settings table is rendered
        /// from these.
        #[cfg(test)]
        pub fn table() -> Vec<$crate::config::Setting> {
            vec![$(row!($key),)*]
        }

        /// One row by key (used by the flags' help).
        fn row(key: &str) -> $crate::config::Setting {
            match key {
                $(stringify!($key) => $crate::config::Setting {
                    key: stringify!($key),
                    reload: $crate::config::Reload::$reload,
                    default: shown!([$($shown)?] [$($default)?]),
                    doc: $crate::config::table::paragraph(&[$($doc),+]),
                },)*
                _ => unreachable!("row!() names a key of the table"),
            }
        }
    };
}

/// A row of the table by key.
macro_rules! row {
    ($key:ident) => {
        row(stringify!($key))
    };
}

/// A row's value type: the given type with a default, else an `Option`.
macro_rules! value_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

macro_rules! default_value {
    () => {
        None
    };
    ($default:expr) => {
        $default
    };
}

/// A row's value from what was given: the default filled in, the check run.
macro_rules! resolve_value {
    ($key:ident, $given:expr, [$($default:expr)?], []) => {
        resolve_value!(@default $given $(, $default)?)
    };
    ($key:ident, $given:expr, [$default:expr], [$check:expr]) => {
        ($check)(stringify!($key), $given.unwrap_or_else(|| $default))?
    };
    ($key:ident, $given:expr, [], [$check:expr]) => {
        $given.map(|value| ($check)(stringify!($key), value)).transpose()?
    };
    (@default $given:expr) => { $given };
    (@default $given:expr, $default:expr) => { $given.unwrap_or_else(|| $default) };
}

/// The default as people read it.
macro_rules! shown {
    ([$shown:literal] [$($default:expr)?]) => {
        $shown.to_string()
    };
    ([] [$default:expr]) => {
        format!("{}", $default)
    };
}

/// `LiveLimits`: one atomic per `Limit` row (a tt-muncher keeps those).
macro_rules! live_limits {
    (@rows [$($kept:tt)*] Limit $key:ident ($ty:ty); $($rest:tt)*) => {
        live_limits!(@rows [$($kept)* $key ($ty);] $($rest)*);
    };
    (@rows [$($kept:tt)*] $other:ident $key:ident ($ty:ty); $($rest:tt)*) => {
        live_limits!(@rows [$($kept)*] $($rest)*);
    };
    (@rows [$($key:ident ($ty:ty);)*]) => {
        /// The limits SIGHUP changes at once (the `Limit` rows), read by
        /// request handlers, the index and the watcher without a lock.
        #[derive(Debug, Default)]
        pub struct LiveLimits {
            $(pub $key: <$ty as $crate::config::LiveValue>::Cell,)*
        }

        impl LiveLimits {
            /// Publishes the limits of `values`.
            pub fn store_values(&self, values: &Values) {
                $($crate::config::LiveValue::store(&values.$key, &self.$key);)*
            }
        }
    };
}
