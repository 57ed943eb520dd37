#!/usr/bin/env bash
# Side by side: Mail::SRS (Perl, the reference implementation) against srs-relay's codec,
# classic form, forward then reverse of the same addresses, same secret, same fixed clock.
#
#   benches/compare-mail-srs.sh            # 100,000 addresses, best of 3 rounds each
#   N=20000 ROUNDS=1 benches/compare-mail-srs.sh
#
# Each side times only its loop (Perl: Time::HiRes monotonic clock; Rust: Instant), not
# start-up or file reading. Both write their forward outputs, which must be identical.
# Needs perl and Mail::SRS (Debian/Ubuntu: libmail-srs-perl); installs nothing.
set -euo pipefail

N=${N:-100000}
ROUNDS=${ROUNDS:-3}
SECRET="compare-mail-srs secret"
NOW=1577836860 # 2020-01-01, postsrsd's test clock
ALIAS="fwd@relay.example.net"

cd "$(dirname "$0")/.."

if ! command -v perl >/dev/null 2>&1; then
    echo "perl is not installed; this comparison needs perl and Mail::SRS (apt-get install libmail-srs-perl)" >&2
    exit 1
fi
if ! perl -MMail::SRS -e 1 >/dev/null 2>&1; then
    echo "Mail::SRS is not installed; this comparison needs it (apt-get install libmail-srs-perl)" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The same N addresses every run: a fixed linear congruential generator (not Perl's rand,
# whose sequence is not promised), of the usual shapes: plain, dots, +tag, -, =, mixed case.
# local + domain stay within 40 characters, so both forms fit the 64-octet local part.
perl -e '
    use strict; use warnings;
    my ($n) = @ARGV;
    my $x = 20200101;
    sub r { my ($m) = @_; $x = ($x * 1103515245 + 12345) % 2147483648; return ($x >> 8) % $m }
    sub word { my ($min, $max) = @_; join "", map { chr(97 + r(26)) } 1 .. $min + r($max - $min + 1) }
    my @tld = qw(org com net io de co.uk info ORG Com);
    for my $i (1 .. $n) {
        my $k = $i % 6;
        my $local = $k == 0 ? word(3, 12)
                  : $k == 1 ? word(2, 7) . "." . word(2, 7)
                  : $k == 2 ? word(3, 8) . "+" . word(2, 6)
                  : $k == 3 ? word(2, 6) . "-" . word(2, 6)
                  : $k == 4 ? word(2, 5) . "=" . word(2, 5)
                  :           join "", map { r(2) ? uc : $_ } split //, word(3, 10);
        my $domain = (r(3) ? "" : word(2, 6) . ".") . word(3, 10) . "." . $tld[r(scalar @tld)];
        print "$local\@$domain\n";
    }
' "$N" >"$tmp/addresses"

# Mail::SRS: forward then reverse each address, best of ROUNDS; clock fixed by overriding
# time() before the module is loaded (Time::HiRes's clock is unaffected).
perl -e '
    use strict; use warnings;
    our $NOW;
    BEGIN { $NOW = $ARGV[2]; *CORE::GLOBAL::time = sub () { $main::NOW }; }
    use Mail::SRS;
    use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);
    my ($file, $secret, $now, $alias, $rounds, $out) = @ARGV;
    open my $in, "<", $file or die "$file: $!";
    chomp(my @senders = <$in>);
    my $srs = Mail::SRS->new(Secret => [$secret]);
    my $best;
    my (@forwarded, @reversed);
    for (1 .. $rounds) {
        @forwarded = ();
        @reversed = ();
        my $t0 = clock_gettime(CLOCK_MONOTONIC);
        for my $sender (@senders) {
            my $f = $srs->forward($sender, $alias);
            push @forwarded, $f;
            push @reversed, $srs->reverse($f);
        }
        my $ns = (clock_gettime(CLOCK_MONOTONIC) - $t0) * 1e9 / @senders;
        $best = $ns if !defined $best || $ns < $best;
    }
    for my $i (0 .. $#senders) {
        die "Mail::SRS: $senders[$i] came back as $reversed[$i]\n" if $reversed[$i] ne $senders[$i];
    }
    open my $fh, ">", $out or die "$out: $!";
    print $fh "$_\n" for @forwarded;
    close $fh or die "$out: $!";
    printf "ns_per_address=%.1f\n", $best;
' "$tmp/addresses" "$SECRET" "$NOW" "$ALIAS" "$ROUNDS" "$tmp/mail-srs.forward" >"$tmp/mail-srs.txt"

# srs-relay: the codec alone (no server features needed).
cargo run --quiet --release --no-default-features --example codec_throughput -- \
    "$tmp/addresses" --secret "$SECRET" --now "$NOW" --alias "$ALIAS" \
    --rounds "$ROUNDS" --out "$tmp/srs-relay.forward" >"$tmp/srs-relay.txt"

value() { sed -n "s/^$1=//p" "$2"; }
perl_ns=$(value ns_per_address "$tmp/mail-srs.txt")
classic_ns=$(value classic_ns_per_address "$tmp/srs-relay.txt")
microsoft_ns=$(value microsoft_ns_per_address "$tmp/srs-relay.txt")

if ! cmp -s "$tmp/mail-srs.forward" "$tmp/srs-relay.forward"; then
    echo "FORWARD OUTPUTS DIFFER (Mail::SRS < > srs-relay), first differences:" >&2
    diff "$tmp/mail-srs.forward" "$tmp/srs-relay.forward" | head -20 >&2
    exit 1
fi
sum=$(sha256sum <"$tmp/srs-relay.forward" | cut -c1-16)

echo "addresses:                   $(wc -l <"$tmp/addresses") (deterministic), best of $ROUNDS rounds each"
echo "secret, clock:               same for both; now = $NOW, forwarding domain ${ALIAS#*@}"
echo "forward outputs:             identical ($(wc -l <"$tmp/srs-relay.forward") lines, sha256 $sum...)"
echo "Mail::SRS $(perl -MMail::SRS -e 'print $Mail::SRS::VERSION') (perl $(perl -e 'printf "%vd", $^V')):  $perl_ns ns/address (classic, forward+reverse)"
echo "srs-relay:                   $classic_ns ns/address (classic, forward+reverse)"
awk -v p="$perl_ns" -v r="$classic_ns" 'BEGIN { printf "ratio Mail::SRS / srs-relay: %.1f\n", p / r }'
echo "srs-relay, Microsoft form:   $microsoft_ns ns/address (forward+reverse)"
