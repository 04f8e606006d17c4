package bench

import (
	"math"
	"slices"
	"time"
)

// Dist summarises a sample; the field that holds it names the unit.
type Dist struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summarise computes the distribution of a sample of durations, in
// milliseconds; an empty sample gives the zero Dist.
func Summarise(d []time.Duration) Dist {
	if len(d) == 0 {
		return Dist{}
	}
	ms := make([]float64, len(d))
	for i, v := range d {
		ms[i] = float64(v) / float64(time.Millisecond)
	}
	return SummariseMS(ms)
}

// SummariseMS is Summarise for plain values (milliseconds or any unit).
func SummariseMS(ms []float64) Dist {
	if len(ms) == 0 {
		return Dist{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Dist{
		N:    len(s),
		Min:  s[0],
		P50:  Quantile(s, 0.50),
		P90:  Quantile(s, 0.90),
		P99:  Quantile(s, 0.99),
		Max:  s[len(s)-1],
		Mean: sum / float64(len(s)),
	}
}

// Quantile returns the q-quantile of a sorted sample by linear
// interpolation between closest ranks (the definition numpy and R use by
// default), so p99 of 200 values lies between the 198th and 199th.
func Quantile(sorted []float64, q float64) float64 {
	n := len(sorted)
	switch {
	case n == 0:
		return math.NaN()
	case n == 1 || q <= 0:
		return sorted[0]
	case q >= 1:
		return sorted[n-1]
	}
	pos := q * float64(n-1)
	lo := int(math.Floor(pos))
	frac := pos - float64(lo)
	if lo+1 >= n {
		return sorted[n-1]
	}
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// Median is the 0.5-quantile of an unsorted sample.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return Quantile(s, 0.5)
}

// Ratio is a/b, or NaN when b is zero or either is NaN.
func Ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// Duplicates counts the values that occur more than once (each extra
// occurrence counts one).
func Duplicates[T comparable](v []T) int {
	seen := make(map[T]bool, len(v))
	n := 0
	for _, x := range v {
		if seen[x] {
			n++
		}
		seen[x] = true
	}
	return n
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
