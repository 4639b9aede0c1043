//! [`FeatureStore`] calls that profile a set's stored rows (see [`crate::query::profile`]).

use tracing::debug_span;

use super::FeatureStore;
use crate::metrics::Operation;
use crate::query::profile::{self, Distribution, DistributionQuery, Freshness, FreshnessQuery};
use crate::Result;

impl FeatureStore {
    /// A numeric feature's distribution over a sample of the set's stored rows. Blocks.
    pub fn distribution(
        &self,
        name: &str,
        feature: &str,
        sample_rows: Option<usize>,
        bins: Option<usize>,
    ) -> Result<Distribution> {
        let set = self.get(name)?;
        let query = DistributionQuery::new(&set.spec, feature, sample_rows, bins)?;
        let _span = debug_span!("storage.distribution").entered();
        let _timer = self.operations.start(Operation::Stats);
        let mut answer = Default::default();
        self.offline
            .query_relations(&[&set.spec], &mut |conn, relations| {
                answer = profile::distribution(conn, &relations[0], &set.spec, &query)?;
                Ok(())
            })?;
        Ok(answer)
    }

    /// The set's freshness over server time, bucket by bucket, as of the store's clock. Blocks.
    pub fn freshness(&self, name: &str, query: &FreshnessQuery) -> Result<Freshness> {
        query.check()?;
        let set = self.get(name)?;
        let now = (self.clock.read())();
        let _span = debug_span!("storage.freshness").entered();
        let _timer = self.operations.start(Operation::Stats);
        let mut answer = Default::default();
        self.offline
            .query_relations(&[&set.spec], &mut |conn, relations| {
                answer = profile::freshness(conn, &relations[0], &set.spec, query, now)?;
                Ok(())
            })?;
        Ok(answer)
    }
}
