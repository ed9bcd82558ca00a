//! Every gRPC call by method and code, and its latency: one tower layer
//! around the server's services.
//!
//! tonic answers an error "trailers-only", its `grpc-status` in the
//! response headers; a success (and an error that ends a stream) carries it
//! in the trailers after the body. Both are read here. The duration runs
//! until the status is known: for `WatchEvents`, the stream's end. A call
//! whose body is dropped before its status (the client went away) counts
//! as `Cancelled`.

use std::{
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tonic::Code;

/// The methods of `faultline.v1.FaultService`, the `method` label's values;
/// every other path (health, reflection, a name a client made up) is
/// `other`, so clients cannot grow the label set.
const METHODS: [&str; 8] = [
    "GetCapabilities",
    "StartExperiment",
    "GetExperiment",
    "ListExperiments",
    "StopExperiment",
    "StopAll",
    "RenewLease",
    "WatchEvents",
];
const SERVICE_PREFIX: &str = "/faultline.v1.FaultService/";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

type Durations = Family<MethodLabel, Histogram, fn() -> Histogram>;

struct Api {
    calls: Family<CallLabels, Counter>,
    durations: Durations,
}

static API: LazyLock<Api> = LazyLock::new(|| Api {
    calls: Family::default(),
    // 250 µs to about 8 s, doubling.
    durations: Family::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
    }),
});

pub(super) fn register(r: &mut Registry) {
    r.register(
        "faultline_api_calls",
        "gRPC calls answered, by method and status code",
        API.calls.clone(),
    );
    r.register(
        "faultline_api_call_duration_seconds",
        "gRPC call latency until its status (for a stream: its end), by method",
        API.durations.clone(),
    );
}

fn method_of(path: &str) -> &'static str {
    path.strip_prefix(SERVICE_PREFIX)
        .and_then(|m| METHODS.iter().find(|k| **k == m))
        .copied()
        .unwrap_or("other")
}

/// The code's name as gRPC spells it in its documentation (`OK`,
/// `InvalidArgument`, …).
fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn status_in(headers: &HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(v))
}

/// A call whose status is not known yet; recorded once, when it is (or as
/// `Cancelled` if dropped first).
struct Pending {
    method: &'static str,
    start: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        API.calls
            .get_or_create(&CallLabels {
                method: self.method,
                code: code_name(code),
            })
            .inc();
        API.durations
            .get_or_create(&MethodLabel {
                method: self.method,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The layer: `Server::builder().layer(ApiCallsLayer)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiCallsLayer;

impl<S> tower::Layer<S> for ApiCallsLayer {
    type Service = ApiCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiCalls { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ApiCalls<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for ApiCalls<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut pending = Pending {
            method: method_of(req.uri().path()),
            start: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    // Trailers-only: the status is in the headers.
                    if let Some(code) = status_in(resp.headers()) {
                        pending.finish(code);
                    }
                    Ok(resp.map(|inner| CountedBody {
                        inner,
                        pending: Some(pending),
                    }))
                }
                Err(e) => {
                    pending.finish(Code::Internal);
                    Err(e)
                }
            }
        })
    }
}

/// The response body, watched for the trailers' `grpc-status`.
pub struct CountedBody<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let code = match &frame {
            Some(Ok(f)) => f
                .trailers_ref()
                .map(|t| status_in(t).unwrap_or(Code::Unknown)),
            Some(Err(_)) => Some(Code::Unknown),
            // The end, with no status anywhere: not a gRPC answer.
            None => Some(Code::Unknown),
        };
        if let (Some(code), Some(p)) = (code, this.pending.as_mut()) {
            p.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_label_is_a_fault_service_method_or_other() {
        assert_eq!(
            method_of("/faultline.v1.FaultService/StartExperiment"),
            "StartExperiment"
        );
        assert_eq!(method_of("/faultline.v1.FaultService/Made-Up"), "other");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "other");
    }

    /// The list is the proto's: a method added there is named here too.
    #[test]
    fn the_methods_are_the_protos() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(faultline_proto::v1::FILE_DESCRIPTOR_SET)
            .unwrap();
        let mut proto: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == "FaultService")
            .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
            .collect();
        proto.sort();
        let mut ours: Vec<String> = METHODS.iter().map(|m| (*m).to_owned()).collect();
        ours.sort();
        assert_eq!(proto, ours);
    }
}
