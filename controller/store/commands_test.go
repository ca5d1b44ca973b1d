package store

import "time"

// applyOne applies c alone and returns its result, with the result's
// error or the batch's.
func applyOne(s *Store, c Command) (Result, error) {
	res, err := s.Apply(c)
	if err != nil {
		return Result{}, err
	}
	return res[0], res[0].Err
}

// applyErr applies c alone and returns its error, as applyOne.
func applyErr(s *Store, c Command) error {
	_, err := applyOne(s, c)
	return err
}

func appendLog(s *Store, id uint64, c Chunk) error {
	return applyErr(s, &Output{Job: id, Chunk: c})
}

func useJoinToken(s *Store, hash []byte, now time.Time, name string) (JoinToken, error) {
	res, err := applyOne(s, &UseJoinToken{Hash: hash, Now: now, Agent: name})
	return deref(res.JoinToken), err
}

func deleteJoinToken(s *Store, id string) (JoinToken, error) {
	res, err := applyOne(s, &DeleteJoinToken{ID: id})
	return deref(res.JoinToken), err
}

func deref(t *JoinToken) JoinToken {
	if t == nil {
		return JoinToken{}
	}
	return *t
}

func pruneJoinTokens(s *Store, before time.Time) (int, error) {
	res, err := applyOne(s, &PruneJoinTokens{Before: before})
	return res.N, err
}

// prune is Prune with Apply as the writer.
func prune(s *Store) func(Command) (Result, error) {
	return func(c Command) (Result, error) { return applyOne(s, c) }
}

// applyAll applies cmds as one batch and returns the batch's error or
// else the first command's.
func applyAll(s *Store, cmds ...Command) error {
	res, err := s.Apply(cmds...)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}
