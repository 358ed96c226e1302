namespace Motr.Be.Recovery;

/// <summary>What recovery found and did when the domain opened.</summary>
public sealed class RecoveryReport
{
    /// <summary>Whether the domain was created by this open (nothing to recover).</summary>
    public bool Created { get; init; }

    /// <summary>Logical log position recovery started from (the checkpoint).</summary>
    public long CheckpointPosition { get; init; }

    /// <summary>Lsn of the first record after the checkpoint.</summary>
    public ulong CheckpointLsn { get; init; }

    /// <summary>Records replayed.</summary>
    public long RecordsReplayed { get; init; }

    /// <summary>Groups replayed.</summary>
    public long GroupsReplayed { get; init; }

    /// <summary>Transactions replayed.</summary>
    public long TxsReplayed { get; init; }

    /// <summary>Log bytes replayed.</summary>
    public long BytesReplayed { get; init; }

    /// <summary>Where the log ends: the next record is written here.</summary>
    public long EndPosition { get; init; }

    /// <summary>Lsn the next record gets.</summary>
    public ulong NextLsn { get; init; }

    /// <summary>Set when the record at the end was damaged or incomplete (a torn write) and was cut off: what was wrong and where.</summary>
    public string? TornTail { get; init; }

    /// <summary>Set in <see cref="RecoveryMode.TruncateAtCorruption"/> when damaged records followed by intact ones were discarded.</summary>
    public string? Truncated { get; init; }

    /// <summary>Set when one of the log's two header slots was damaged and the other one's checkpoint served (what was wrong with it).</summary>
    public string? DamagedHeaderSlot { get; init; }

    /// <summary>Time recovery took.</summary>
    public TimeSpan Duration { get; init; }

    /// <inheritdoc />
    public override string ToString() =>
        Created ? "created a new domain"
        : $"replayed {RecordsReplayed} records ({GroupsReplayed} groups, {TxsReplayed} txs, {BytesReplayed} bytes) from lsn {CheckpointLsn} in {Duration.TotalMilliseconds:F1} ms"
          + (TornTail is null ? "" : $"; torn tail cut: {TornTail}") + (Truncated is null ? "" : $"; TRUNCATED: {Truncated}")
          + (DamagedHeaderSlot is null ? "" : $"; DAMAGED LOG HEADER: {DamagedHeaderSlot} (the other slot served)");
}
