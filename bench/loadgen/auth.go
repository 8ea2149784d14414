package main

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// devSecret is parley.auth.DEV_SECRET: the HS256 key of development deployments.
const devSecret = "parley-development-secret-do-not-use-in-production"

// mintToken: what parley.auth.mint_dev_token mints (sub, iat, exp; HS256).
func mintToken(userID, secret string, ttl time.Duration) (string, error) {
	now := time.Now()
	token := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": userID,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	})
	return token.SignedString([]byte(secret))
}
