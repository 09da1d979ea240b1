//! Shared by the aggregate functions' tests: the merge law, as DataFusion's final aggregation
//! exercises it.

use arrow::array::ArrayRef;
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

pub(crate) fn state_arrays(acc: &mut dyn Accumulator) -> Vec<ArrayRef> {
    acc.state().unwrap().iter().map(|s| s.to_array().unwrap()).collect()
}

/// The result of two partial accumulators over `first` and `second`, merged by a final one that
/// sees only their states, in reverse order.
pub(crate) fn merged<A: Accumulator>(new: impl Fn() -> A, first: &[ArrayRef], second: &[ArrayRef]) -> ScalarValue {
    let (mut a, mut b, mut fin) = (new(), new(), new());
    a.update_batch(first).unwrap();
    b.update_batch(second).unwrap();
    fin.merge_batch(&state_arrays(&mut b)).unwrap();
    fin.merge_batch(&state_arrays(&mut a)).unwrap();
    fin.evaluate().unwrap()
}
