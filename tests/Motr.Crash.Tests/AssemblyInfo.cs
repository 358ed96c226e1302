// The crash tests are CPU- and process-heavy; run them one at a time so each has the machine (and its timing) to itself.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
