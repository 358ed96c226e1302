using Motr.CrashChild;
using Motr.Runtime;

// Motr.CrashChild <dir> <seed> [workload]
//
// The child of the process-kill crash tests (tests/Motr.Crash.Tests/ProcessKillTests.cs, docs/crash-testing.md).
// Opens (creating if missing, recovering otherwise) the domain in <dir>, prints the recovery report to stderr and
// "R <locality> <counter>" per locality to stdout, then runs the workload until it is killed. Every transaction
// reported persistent is printed as "P <locality> <value>" on stdout, flushed at once, so a parent that kills the
// process with SIGKILL knows what the engine promised before it died.
//
// Workloads:
//   counter   (the default) see CounterWorkload.cs: "R"/"P" values are the locality's counter.
//   btree     see BTreeWorkload.cs: a b+tree per locality holding a counter and a sliding window of records;
//             "R"/"P" values are the counter (the number of steps).
//   deleteall see DeleteAllWorkload.cs: a b+tree per locality filled, emptied by delete-all (resumed after each
//             kill), filled again...; "R"/"P" values are transaction ids.
//   recover   only opens the folder (running recovery), prints what it holds (and the fsck report and records of a
//             b+tree under the root "t", if any), closes it and exits: to look at a
//             folder a failed test kept, or at a crash image SimulatedCrashTests saved (work on a copy: recovery
//             changes the folder).

string[] workloads = ["counter", "btree", "deleteall", "recover"];
if (args.Length < 2 || !int.TryParse(args[1], out int seed))
{
    Console.Error.WriteLine($"usage: Motr.CrashChild <dir> <seed> [workload]   (workloads: {string.Join(", ", workloads)})");
    return 2;
}
string dir = args[0];
string workload = args.Length > 2 ? args[2] : "counter";
if (!workloads.Contains(workload))
{
    Console.Error.WriteLine($"unknown workload '{workload}' (workloads: {string.Join(", ", workloads)})");
    return 2;
}

// One writer for stdout, flushed on every line: a line is in the pipe before the next transaction is acknowledged.
var stdout = TextWriter.Synchronized(new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = true });
var stderr = TextWriter.Synchronized(new StreamWriter(Console.OpenStandardError()) { AutoFlush = true });

if (workload == "recover")
{
    if (!File.Exists(Path.Combine(dir, Motr.Be.BeConstants.LogFileName)))
    {
        Console.Error.WriteLine($"{dir} holds no domain");
        return 2;
    }
    var options = ChildConfig.Options(dir, w => stderr.WriteLine("warning: " + w));
    options.CreateIfMissing = false;
    options.OnRecoveredPayload = p => stdout.WriteLine($"payload: segment {p.SegmentId} tx {p.TxId}, {p.Payload.Length} bytes");
    await using var domain = await Motr.Be.Domain.OpenAsync(options);
    stderr.WriteLine($"recovery: {domain.Recovery}");
    foreach (var seg in domain.Segments)
        stdout.WriteLine($"segment {seg.Id}: size {seg.Size}, last tx {seg.LastTxId}, data CRC32C 0x{Motr.Be.Crc32C.Compute(seg.Bytes(4096, (int)(seg.Size - 4096))):X8}, " +
            $"roots [{string.Join(", ", seg.Roots().Select(r => $"{r.Key}={r.Value}"))}]");
    // A b+tree under the root "t" (the b+tree crash workloads): its fsck report and its records.
    foreach (var seg in domain.Segments)
    {
        if (!seg.TryGetRoot(BTreeWorkload.RootName, out long off)) continue;
        try
        {
            var tree = Motr.Be.BTree.BTree.Open(seg, off);
            stdout.WriteLine($"segment {seg.Id}: b+tree 0x{off:X}: {tree.Check()}");
            var c = tree.OpenCursor();
            for (bool ok = c.SeekFirst(); ok; ok = c.MoveNext())
                stdout.WriteLine($"  {Convert.ToHexString(c.Key)} = {c.Value.Length} bytes, CRC32C 0x{Motr.Be.Crc32C.Compute(c.Value):X8}");
        }
        catch (Exception e)
        {
            stdout.WriteLine($"segment {seg.Id}: b+tree 0x{off:X}: {e.GetType().Name}: {e.Message}");
        }
    }
    return 0;
}

await using var engine = await Engine.OpenAsync(ChildConfig.Options(dir, w => stderr.WriteLine("warning: " + w)));
stderr.WriteLine($"recovery: {engine.Domain.Recovery}");
foreach (var loc in engine.Localities)
{
    var (counter, problem) = await loc.RunAsync(() => workload switch
    {
        "btree" => BTreeWorkload.ReadAndCheck(loc.Segment!, loc.Index),
        "deleteall" => DeleteAllWorkload.ReadAndCheck(loc.Segment!, loc.Index),
        _ => (CounterWorkload.ReadCounter(loc.Segment!), CounterWorkload.Check(loc.Segment!, loc.Index)),
    });
    if (problem != null)
    {
        stderr.WriteLine($"BAD recovered state: {problem}");
        return 3;
    }
    stdout.WriteLine($"R {loc.Index} {counter}");
}

try
{
    if (workload == "btree") await BTreeWorkload.RunAsync(engine, seed, stdout, CancellationToken.None);
    else if (workload == "deleteall") await DeleteAllWorkload.RunAsync(engine, stdout, CancellationToken.None);
    else await CounterWorkload.RunAsync(engine, seed, stdout, CancellationToken.None);
}
catch (Exception e)
{
    stderr.WriteLine($"workload failed: {e}");
    return 4;
}
return 0;
