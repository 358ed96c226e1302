namespace Motr.Be.Tx;

/// <summary>
/// What a transaction may capture: at most <see cref="Regions"/> regions totalling at most
/// <see cref="Bytes"/> bytes (a payload counts against the bytes). Log space for the worst case is
/// reserved when the transaction opens, so a transaction never fails at close. Credits compose:
/// a data structure publishes the credit of one operation, and callers add and multiply them.
/// </summary>
/// <param name="Regions">Maximum number of <c>Capture</c> calls (and deferred checksums).</param>
/// <param name="Bytes">Maximum total bytes captured, plus the payload length.</param>
public readonly record struct TxCredit(int Regions, long Bytes)
{
    /// <summary>No captures at all.</summary>
    public static TxCredit Zero => default;

    /// <summary>Credit for capturing one region of <paramref name="length"/> bytes.</summary>
    public static TxCredit Region(long length) => new(1, length);

    /// <summary>Credit for capturing one unmanaged value of type <typeparamref name="T"/>.</summary>
    public static unsafe TxCredit Of<T>() where T : unmanaged => new(1, sizeof(T));

    /// <summary>Credit for a payload of <paramref name="length"/> bytes.</summary>
    public static TxCredit Payload(int length) => new(0, length);

    /// <summary>Both credits together.</summary>
    /// <exception cref="OverflowException">The sum does not fit (the message names both credits).</exception>
    public static TxCredit operator +(TxCredit a, TxCredit b)
    {
        try { return new(checked(a.Regions + b.Regions), checked(a.Bytes + b.Bytes)); }
        catch (OverflowException) { throw new OverflowException($"credit {a} + {b} overflows"); }
    }

    /// <summary><paramref name="n"/> times the credit.</summary>
    /// <exception cref="OverflowException">The product does not fit (the message names the credit and the factor).</exception>
    public static TxCredit operator *(TxCredit a, int n)
    {
        try { return new(checked(a.Regions * n), checked(a.Bytes * n)); }
        catch (OverflowException) { throw new OverflowException($"credit {a} times {n} overflows"); }
    }

    /// <summary><paramref name="n"/> times the credit.</summary>
    public static TxCredit operator *(int n, TxCredit a) => a * n;

    /// <summary>The larger of each component: the credit of "one of these, whichever happens".</summary>
    public static TxCredit Max(TxCredit a, TxCredit b) => new(Math.Max(a.Regions, b.Regions), Math.Max(a.Bytes, b.Bytes));

    /// <summary>Whether this credit covers <paramref name="other"/>.</summary>
    public bool Covers(TxCredit other) => Regions >= other.Regions && Bytes >= other.Bytes;

    /// <inheritdoc />
    public override string ToString() => $"{Regions} regions / {Bytes} bytes";
}
