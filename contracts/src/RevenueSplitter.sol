// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title RevenueSplitter
/// @notice Holds the Auton revenue of every model version and lets each contributor pull its share.
/// @dev Shares come from the {ModelRegistry} (fixed when a version is added). Exactness: of each deposit
/// `d`, the part `d - d % 10_000` is split exactly by the shares (basis points of a multiple of 10,000 wei
/// leave no remainder) and the rest, `d % 10_000` (under 10^-14 AUTON), goes to the version's first
/// contributor. Every entitlement only grows and the entitlements of a version add up to what it
/// received, so for each version `received == released + owed` to the wei, and nothing is left that no
/// one can claim. Released tokens go to the contributor whoever calls {release}.
contract RevenueSplitter {
    using SafeERC20 for IERC20;

    struct Totals {
        uint128 received;
        uint128 residue;
    }

    uint256 private constant TOTAL_SHARES_BPS = 10_000;

    /// @notice The Auton token.
    IERC20 public immutable token;
    /// @notice The registry that defines each version's contributors and shares.
    ModelRegistry public immutable registry;

    mapping(uint256 versionId => Totals) private _totals;
    /// @notice Total released to contributors of a version.
    mapping(uint256 versionId => uint256) public totalReleased;
    /// @notice Released so far to `account` from a version.
    mapping(uint256 versionId => mapping(address account => uint256)) public released;

    /// @notice `from` deposited `amount` for a version's contributors.
    event Deposited(uint256 indexed versionId, address indexed from, uint256 amount);
    /// @notice `amount` was released to `account` from a version.
    event Released(uint256 indexed versionId, address indexed account, uint256 amount);

    /// @notice No version has this id.
    error UnknownVersion(uint256 versionId);
    /// @notice Deposits must be positive.
    error ZeroAmount();
    /// @notice `account` is owed nothing from this version.
    error NothingToRelease(uint256 versionId, address account);

    /// @param token_ The Auton token.
    /// @param registry_ The model registry.
    constructor(IERC20 token_, ModelRegistry registry_) {
        token = token_;
        registry = registry_;
    }

    /// @notice Deposits `amount` (pulled from the caller, who approves this splitter first) for the
    /// contributors of a version.
    /// @param versionId An existing model version.
    /// @param amount Amount in Auton wei.
    function deposit(uint256 versionId, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        if (!registry.versionExists(versionId)) revert UnknownVersion(versionId);
        Totals storage totals = _totals[versionId];
        totals.received += SafeCast.toUint128(amount);
        totals.residue += uint128(amount % TOTAL_SHARES_BPS);
        emit Deposited(versionId, msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Sends `account` what it is owed from a version. Anyone may call; the tokens go to `account`.
    /// @param versionId The version.
    /// @param account A contributor of the version.
    /// @return amount The amount released.
    function release(uint256 versionId, address account) external returns (uint256 amount) {
        amount = releasable(versionId, account);
        if (amount == 0) revert NothingToRelease(versionId, account);
        released[versionId][account] += amount;
        totalReleased[versionId] += amount;
        emit Released(versionId, account, amount);
        token.safeTransfer(account, amount);
    }

    /// @notice Total ever deposited for a version.
    function totalReceived(uint256 versionId) external view returns (uint256) {
        return _totals[versionId].received;
    }

    /// @notice What `account` is owed from a version now.
    function releasable(uint256 versionId, address account) public view returns (uint256) {
        (uint256 sharesBps, bool residual) = registry.shareOf(versionId, account);
        Totals memory totals = _totals[versionId];
        uint256 entitled = sharesBps * ((totals.received - totals.residue) / TOTAL_SHARES_BPS);
        if (residual) entitled += totals.residue;
        return entitled - released[versionId][account];
    }
}
