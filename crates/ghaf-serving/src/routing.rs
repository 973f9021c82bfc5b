//! Routing of requests over an endpoint's variants, computed once per endpoint generation.
//!
//! A weighted policy (A/B or canary) divides the range `[0, ROUTING_POINTS)` among the
//! routed variants in proportion to their weights, in a fixed order. A request with a
//! sticky key is placed at the point its key hashes to; a request without one at a random
//! point. A variant whose share rounds down to zero points receives no traffic, so shares
//! below 1 in [`ROUTING_POINTS`] are not honoured.
//!
//! The sticky hash is FNV-1a 64 over the endpoint name, a zero byte and the key's bytes,
//! followed by the 64-bit finalizer of MurmurHash3 (which mixes FNV's weak low bits), taken
//! modulo [`ROUTING_POINTS`]. It has no random seed, so every replica and every restart
//! places a key at the same point. Integer keys are hashed as their decimal text, so the
//! integer 42 and the string "42" reach the same variant.
//!
//! A canary walks the stable variants first and the candidate last, so the candidate owns
//! the top of the range: when its weight grows, the keys it already had stay on it.

use ghaf_runtime::{InferRequest, TensorData};

use crate::InferContext;
use crate::policy::{CANDIDATE_VARIANT, ShadowSpec, StickyKey, TrafficPolicy};
use crate::store::Variant;

/// Points the weighted routing range is divided into.
pub const ROUTING_POINTS: u64 = 10_000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// Mixes the bits of `h` with the 64-bit finalizer of MurmurHash3.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Returns the routing point of a sticky key on an endpoint, in `[0, ROUTING_POINTS)`.
pub fn sticky_point(endpoint: &str, key: &[u8]) -> u64 {
    let state = fnv1a(fnv1a(FNV_OFFSET, endpoint.as_bytes()), &[0]);
    fmix64(fnv1a(state, key)) % ROUTING_POINTS
}

/// Writes the decimal text of `value` into `buffer` and returns it.
fn decimal(value: i128, buffer: &mut [u8; 40]) -> &[u8] {
    let negative = value < 0;
    let mut magnitude = value.unsigned_abs();
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        start -= 1;
        buffer[start] = b'-';
    }
    &buffer[start..]
}

/// Routing table of one endpoint generation, precomputed from its policy and variants so
/// that picking a variant allocates nothing and takes no lock.
#[derive(Clone, Debug)]
pub(crate) struct Routing {
    weighted: bool,
    /// Variant index of each routed variant with the exclusive upper end of its share of
    /// `[0, ROUTING_POINTS)`, in walk order.
    table: Vec<(u64, usize)>,
    /// Index of the first routed variant: the target of a single-variant policy and the
    /// fallback when every weight is zero.
    first: Option<usize>,
    sticky: Option<StickyKey>,
    /// FNV-1a state after the endpoint name and the separator byte.
    sticky_seed: u64,
    /// Index of the shadow variant and the share of requests mirrored to it (0 to 1).
    shadow: Option<(usize, f64)>,
}

impl Routing {
    pub(crate) fn new(
        endpoint: &str,
        policy: &TrafficPolicy,
        variants: &[Variant],
        shadow: Option<&ShadowSpec>,
    ) -> Self {
        let shadow_index = shadow.and_then(|spec| {
            variants
                .iter()
                .position(|variant| variant.name == spec.variant)
                .map(|index| (index, (spec.percent / 100.0).clamp(0.0, 1.0)))
        });
        let routed: Vec<usize> = (0..variants.len())
            .filter(|&index| shadow_index.is_none_or(|(shadow, _)| shadow != index))
            .collect();
        let mut order = routed.clone();
        if matches!(policy, TrafficPolicy::Canary(_)) {
            // Stable variants first, the candidate last (a stable sort keeps the rest).
            order.sort_by_key(|&index| variants[index].name == CANDIDATE_VARIANT);
        }
        let total: u64 = order
            .iter()
            .map(|&index| u64::from(variants[index].weight))
            .sum();
        let mut table = Vec::with_capacity(order.len());
        let mut cumulative = 0u64;
        for &index in &order {
            cumulative += u64::from(variants[index].weight);
            // Without any weight the table stays empty and the first variant serves.
            if let Some(upper) = (cumulative * ROUTING_POINTS).checked_div(total) {
                table.push((upper, index));
            }
        }
        let sticky = policy.sticky().map(|key| match key {
            StickyKey::Header { name } => StickyKey::Header {
                name: name.to_ascii_lowercase(),
            },
            StickyKey::Input { name } => StickyKey::Input { name: name.clone() },
        });
        Self {
            weighted: !matches!(policy, TrafficPolicy::Single) && !table.is_empty(),
            table,
            first: routed.first().copied(),
            sticky,
            sticky_seed: fnv1a(fnv1a(FNV_OFFSET, endpoint.as_bytes()), &[0]),
            shadow: shadow_index,
        }
    }

    /// Returns the index of the variant a request goes to; `None` when the endpoint has
    /// no routed variant.
    pub(crate) fn route(
        &self,
        request: Option<&InferRequest>,
        context: &InferContext,
    ) -> Option<usize> {
        if !self.weighted {
            return self.first;
        }
        let point = match self.key_point(request, context) {
            Some(point) => point,
            None => rand::random::<u64>() % ROUTING_POINTS,
        };
        self.variant_at(point)
    }

    /// Returns the variant that owns `point` of the routing range.
    pub(crate) fn variant_at(&self, point: u64) -> Option<usize> {
        self.table
            .iter()
            .find(|(upper, _)| point < *upper)
            .map(|(_, index)| *index)
            .or(self.first)
    }

    /// Returns the point of the request's sticky key; `None` without a sticky policy or
    /// when the request lacks the key. An empty key counts as missing, so callers that send
    /// an empty header or string are spread at random instead of all landing on one variant.
    fn key_point(&self, request: Option<&InferRequest>, context: &InferContext) -> Option<u64> {
        let hash = |key: &[u8]| fmix64(fnv1a(self.sticky_seed, key)) % ROUTING_POINTS;
        match self.sticky.as_ref()? {
            StickyKey::Header { name } => context
                .headers
                .iter()
                .find(|(header, _)| header == name)
                .filter(|(_, value)| !value.is_empty())
                .map(|(_, value)| hash(value.as_bytes())),
            StickyKey::Input { name } => {
                let tensor = request?.inputs.iter().find(|t| &t.name == name)?;
                let mut buffer = [0u8; 40];
                let integer = match &tensor.data {
                    TensorData::Bytes(values) => {
                        return values.first().filter(|v| !v.is_empty()).map(|v| hash(v));
                    }
                    TensorData::Int8(v) => i128::from(*v.first()?),
                    TensorData::Int16(v) => i128::from(*v.first()?),
                    TensorData::Int32(v) => i128::from(*v.first()?),
                    TensorData::Int64(v) => i128::from(*v.first()?),
                    TensorData::Uint8(v) => i128::from(*v.first()?),
                    TensorData::Uint16(v) => i128::from(*v.first()?),
                    TensorData::Uint32(v) => i128::from(*v.first()?),
                    TensorData::Uint64(v) => i128::from(*v.first()?),
                    TensorData::Bool(_)
                    | TensorData::Fp16(_)
                    | TensorData::Fp32(_)
                    | TensorData::Fp64(_) => return None,
                };
                Some(hash(decimal(integer, &mut buffer)))
            }
        }
    }

    /// Returns the shadow variant's index when this request is mirrored to it, drawn at
    /// random with the shadow's share.
    pub(crate) fn mirror(&self) -> Option<usize> {
        let (index, share) = self.shadow?;
        if share <= 0.0 {
            return None;
        }
        (share >= 1.0 || rand::random::<f64>() < share).then_some(index)
    }

    /// Index of the first routed variant: the stable version under a canary, the variant a
    /// single policy serves.
    pub(crate) fn first(&self) -> Option<usize> {
        self.first
    }

    /// Index of the shadow variant, mirrored or not.
    pub(crate) fn shadow_index(&self) -> Option<usize> {
        self.shadow.map(|(index, _)| index)
    }

    /// Returns whether weighted routing or the single-variant policy may send requests to
    /// the variant at `index`.
    pub(crate) fn is_routed(&self, index: usize) -> bool {
        if self.shadow_index() == Some(index) {
            return false;
        }
        if self.weighted {
            let mut lower = 0;
            for &(upper, routed) in &self.table {
                if routed == index {
                    return upper > lower;
                }
                lower = upper;
            }
            false
        } else {
            self.first == Some(index)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AbSpec, CanarySpec};

    fn variant(name: &str, version: i64, weight: u32) -> Variant {
        Variant {
            name: name.into(),
            model: "m".into(),
            version,
            weight,
        }
    }

    fn canary(step: u32) -> Routing {
        let policy = TrafficPolicy::Canary(CanarySpec {
            steps: vec![5, 25, 50],
            interval_secs: 60,
            min_requests: 100,
            failure_threshold: 1,
            checks: Default::default(),
            sticky: Some(StickyKey::Header {
                name: "X-User-Id".into(),
            }),
        });
        // The candidate is listed first on purpose: the walk puts it last.
        let variants = [
            variant(CANDIDATE_VARIANT, 2, step),
            variant("primary", 1, 100 - step),
        ];
        Routing::new("live", &policy, &variants, None)
    }

    fn header(value: &str) -> InferContext {
        InferContext {
            principal: String::new(),
            headers: vec![("x-user-id".into(), value.into())],
        }
    }

    #[test]
    fn decimal_text_of_integers() {
        let mut buffer = [0u8; 40];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(-42, &mut buffer), b"-42");
        assert_eq!(
            decimal(i128::from(u64::MAX), &mut buffer),
            b"18446744073709551615"
        );
    }

    #[test]
    fn sticky_point_is_fixed() {
        // Fixed values: a change of the hash moves every sticky caller.
        let first = sticky_point("live", b"user-1");
        assert_eq!(first, sticky_point("live", b"user-1"));
        assert!(first < ROUTING_POINTS);
        assert_ne!(
            sticky_point("live", b"user-1"),
            sticky_point("other", b"user-1")
        );
    }

    #[test]
    fn canary_candidate_owns_top_range() {
        let routing = canary(5);
        assert_eq!(routing.variant_at(9_499), Some(1));
        assert_eq!(routing.variant_at(9_500), Some(0));
        assert_eq!(routing.variant_at(9_999), Some(0));
    }

    #[test]
    fn canary_keys_stay_on_candidate() {
        let small = canary(5);
        let large = canary(25);
        for user in 0..5000 {
            let context = header(&format!("user-{user}"));
            if small.route(None, &context) == Some(0) {
                assert_eq!(large.route(None, &context), Some(0), "user-{user}");
            }
        }
    }

    #[test]
    fn sticky_split_follows_weights() {
        let policy = TrafficPolicy::Ab(AbSpec {
            sticky: Some(StickyKey::Header {
                name: "x-user-id".into(),
            }),
            ..AbSpec::default()
        });
        let routing = Routing::new(
            "live",
            &policy,
            &[variant("a", 1, 70), variant("b", 2, 30)],
            None,
        );
        let keys = 20_000u32;
        let on_b = (0..keys)
            .filter(|key| routing.route(None, &header(&format!("{key}"))) == Some(1))
            .count() as f64;
        // Within 5 standard deviations of the binomial count: a false alarm about once in
        // 1.7 million runs, and the keys are fixed, so the outcome is the same every run.
        let (n, p) = (f64::from(keys), 0.3);
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!(
            (on_b - n * p).abs() <= 5.0 * sigma,
            "{on_b} of {n} keys on b"
        );
    }

    #[test]
    fn same_key_same_variant() {
        let routing = canary(25);
        let context = header("user-7");
        let first = routing.route(None, &context);
        for _ in 0..1000 {
            assert_eq!(routing.route(None, &context), first);
        }
    }

    #[test]
    fn integer_and_string_keys_agree() {
        let policy = TrafficPolicy::Ab(AbSpec {
            sticky: Some(StickyKey::Input {
                name: "customer".into(),
            }),
            ..AbSpec::default()
        });
        let routing = Routing::new(
            "live",
            &policy,
            &[variant("a", 1, 50), variant("b", 2, 50)],
            None,
        );
        let context = InferContext::default();
        for id in 0..200i64 {
            let ints = InferRequest {
                inputs: vec![ghaf_runtime::Tensor::new(
                    "customer",
                    vec![1],
                    TensorData::Int64(vec![id]),
                )],
                ..InferRequest::default()
            };
            let text = InferRequest {
                inputs: vec![ghaf_runtime::Tensor::new(
                    "customer",
                    vec![1],
                    TensorData::Bytes(vec![id.to_string().into_bytes()]),
                )],
                ..InferRequest::default()
            };
            assert_eq!(
                routing.route(Some(&ints), &context),
                routing.route(Some(&text), &context),
                "key {id}"
            );
        }
    }

    #[test]
    fn shadow_is_never_routed() {
        let policy = TrafficPolicy::Ab(AbSpec::default());
        let shadow = ShadowSpec {
            variant: "shadow".into(),
            percent: 100.0,
        };
        let routing = Routing::new(
            "live",
            &policy,
            &[
                variant("a", 1, 50),
                variant("shadow", 3, 50),
                variant("b", 2, 50),
            ],
            Some(&shadow),
        );
        let context = InferContext::default();
        for _ in 0..1000 {
            assert_ne!(routing.route(None, &context), Some(1));
        }
        assert_eq!(routing.mirror(), Some(1));
        assert!(!routing.is_routed(1));
        assert!(routing.is_routed(2));
    }

    #[test]
    fn empty_key_is_not_sticky() {
        let routing = canary(50);
        let empty = header("");
        let first = routing.route(None, &empty);
        // With a random point per request, 200 requests at 50% all on one variant happen
        // with probability 2^-199.
        let moved = (0..200).any(|_| routing.route(None, &empty) != first);
        assert!(moved, "every request with an empty key reached {first:?}");
    }

    #[test]
    fn zero_weights_fall_back_to_first() {
        let policy = TrafficPolicy::Ab(AbSpec::default());
        let routing = Routing::new(
            "live",
            &policy,
            &[variant("a", 1, 0), variant("b", 2, 0)],
            None,
        );
        assert_eq!(routing.route(None, &InferContext::default()), Some(0));
    }
}
